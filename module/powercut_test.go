package main

import (
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/edgetpm/edgetpm/internal/emulator/hubemu"
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

	hub := devHub(t)
	plc := newPlant(t, hub, 100, "")
	dir := t.TempDir()
	caFile := filepath.Join(dir, "ca.pem")
	writeFile(t, caFile, hub.CA.CertPEM())
	data := filepath.Join(mnt, "data")

	var published []string
	stopProducing := make(chan struct{})
	produced := make(chan struct{})
	produce := func() {
		defer close(produced)
		for {
			select {
			case <-stopProducing:
				return
			default:
			}
			published = append(published, plc.publish(t, 50, 50, 10*time.Millisecond)...)
		}
	}

	const rounds, perRound = 6, 100
	ctx := t.Context()
	var inputs []string
	for round := range rounds {
		p := startProcess(t, hub, data, caFile)
		if round == 0 {
			plc.waitUp(t)
			go produce()
		}
		for i := range perRound {
			id := fmt.Sprintf("r%d-%03d", round, i)
			if err := hub.SendToInput(ctx, "edge1", "relay", "readings", hubemu.Message{Body: []byte(id), System: map[string]string{"$.mid": id}}); err != nil {
				t.Fatal(err)
			}
			inputs = append(inputs, id)
		}
		time.Sleep(time.Duration(100+rng.IntN(500)) * time.Millisecond)
		fsys.Cut()
		p.kill()
		if err := m.Unmount(); err != nil {
			t.Fatalf("round %d: unmount after the cut: %v", round, err)
		}
		m = fsys.Mount(t, mnt)
	}
	p := startProcess(t, hub, data, caFile)
	defer p.kill()
	time.Sleep(300 * time.Millisecond)
	close(stopProducing)
	<-produced

	want := append(slices.Clone(inputs), published...)
	deadline := time.Now().Add(60 * time.Second)
	for {
		got := map[string]bool{}
		for _, m := range hub.Upstream() {
			got[string(m.Body)] = true
		}
		n := missing(want, got)
		if n == 0 {
			t.Logf("seed %d: %d edgeHub inputs and %d Mosquitto messages after %d power cuts: %d deliveries upstream",
				seed, len(inputs), len(published), fsys.Cuts(), len(hub.Upstream()))
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d messages never arrived upstream\nlast log:\n%s", n, len(want), p.log.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
}
