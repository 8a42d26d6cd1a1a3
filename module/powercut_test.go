package main

import (
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/edgetpm/edgetpm/internal/testharness/powercut"
)

// The relay end to end with its data folder on a filesystem that loses,
// at a power cut, whatever was not fsync'd (internal/testharness/powercut):
// the power is cut six times at random moments, the first while the data
// folder is fresh, under both intakes. Every message Mosquitto
// acknowledged to the producer and every message edgeHub handed over
// arrives upstream.
func TestPowerCutEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the module and cuts its power")
	}
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("POWERCUT_SEED"); s != "" {
		fmt.Sscan(s, &seed)
	}
	defer func() {
		if t.Failed() {
			t.Logf("seed %d (POWERCUT_SEED=%d reruns it)", seed, seed)
		}
	}()
	rng := rand.New(rand.NewPCG(seed, 2))
	fsys := powercut.New(seed)
	mnt := t.TempDir()
	m := fsys.Mount(t, mnt)
	n := crashUnderLoad(t, filepath.Join(mnt, "data"), 6, 100, false,
		func(int) time.Duration { return time.Duration(100+rng.IntN(500)) * time.Millisecond },
		func(round int, p *process) {
			fsys.Cut()
			p.kill()
			if err := m.Unmount(); err != nil {
				t.Fatalf("round %d: unmount after the cut: %v", round, err)
			}
			m = fsys.Mount(t, mnt)
		})
	t.Logf("seed %d: %d edgeHub inputs and %d Mosquitto messages after %d power cuts: %d deliveries upstream",
		seed, n.inputs, n.published, fsys.Cuts(), n.upstream)
}
