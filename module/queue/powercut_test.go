package queue

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/edgetpm/edgetpm/internal/testharness/powercut"
)

// TestPowerCut runs the queue on a filesystem that loses, at a power cut,
// whatever was not made durable, and cuts the power at random moments:
// during Open of a fresh folder, amid appends, acks and segment changes.
// Every Append that returned before the cut must be read back after it,
// whole, unless it was acked.
func TestPowerCut(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("POWERCUT_SEED"); s != "" {
		fmt.Sscan(s, &seed)
	}
	cuts := 100
	if testing.Short() {
		cuts = 20
	}
	defer func() {
		if t.Failed() {
			t.Logf("seed %d (POWERCUT_SEED=%d reruns it)", seed, seed)
		}
	}()
	rng := rand.New(rand.NewPCG(seed, 1))
	fsys := powercut.New(seed)
	mnt := t.TempDir()
	m := fsys.Mount(t, mnt)
	var (
		folder             string
		acknowledged       = map[string]bool{} // IDs whose Append returned
		acked              = map[string]bool{} // IDs acked, or about to be
		checked, delivered int
	)
	for round := range cuts {
		if round%4 == 0 {
			// A fresh data folder, whose queue folder Open makes.
			folder = filepath.Join(mnt, fmt.Sprintf("data-%d", round), "queue")
			clear(acknowledged)
			clear(acked)
		}
		opts := Options{Dir: folder, SegmentSize: 16 << 10, Log: zerolog.Nop()}
		run := runQueue(t, opts, round, acknowledged, acked)
		time.Sleep(time.Duration(rng.IntN(int(40 * time.Millisecond))))
		fsys.Cut()
		run()
		if err := m.Unmount(); err != nil {
			t.Fatalf("round %d: unmount: %v", round, err)
		}
		m = fsys.Mount(t, mnt)

		q, err := Open(opts)
		if err != nil {
			t.Fatalf("round %d: Open after the cut: %v", round, err)
		}
		got := map[string]*Message{}
		for _, msg := range readAll(t, q, 0) {
			if want := powerCutBody(msg.ID); !bytes.Equal(msg.Body, want) {
				t.Errorf("round %d: message %s holds %q, was appended with %q", round, msg.ID, msg.Body, want)
			}
			got[msg.ID] = msg
		}
		lost := 0
		for id := range acknowledged {
			if !acked[id] {
				checked++
				if got[id] == nil {
					lost++
				}
			}
		}
		delivered += len(got)
		if lost > 0 {
			t.Errorf("round %d: %d of %d acknowledged, unacked messages lost (%d read)", round, lost, len(acknowledged)-len(acked), len(got))
		}
		if err := q.Close(); err != nil {
			t.Fatalf("round %d: Close: %v", round, err)
		}
		if t.Failed() {
			return
		}
	}
	t.Logf("seed %d: %d cuts, %d acknowledged messages checked after them, %d read", seed, fsys.Cuts(), checked, delivered)
}

// runQueue opens the queue in opts.Dir and appends and acks until the power
// is cut, recording in acknowledged each message whose Append returned and
// in acked each that it is about to ack. The returned func waits for it to
// stop after the cut.
func runQueue(t *testing.T, opts Options, round int, acknowledged, acked map[string]bool) func() {
	var (
		mu sync.Mutex
		wg sync.WaitGroup
	)
	ctx, cancel := context.WithCancel(context.Background())
	wg.Go(func() {
		q, err := Open(opts)
		if err != nil {
			return // the cut came during Open
		}
		var pw sync.WaitGroup
		for p := range 3 {
			pw.Go(func() {
				for i := 0; ctx.Err() == nil; i++ {
					var batch []*Message
					for j := range 1 + i%4 {
						id := fmt.Sprintf("r%d-p%d-%d-%d", round, p, i, j)
						batch = append(batch, &Message{ID: id, Body: powerCutBody(id)})
					}
					if err := q.Append(ctx, batch...); err != nil {
						return
					}
					mu.Lock()
					for _, m := range batch {
						acknowledged[m.ID] = true
					}
					mu.Unlock()
				}
			})
		}
		pw.Go(func() {
			var after uint64
			for ctx.Err() == nil {
				msgs, err := q.Read(ctx, after, 16)
				if err != nil {
					return
				}
				// Ack every other batch, so that acks and a backlog both
				// meet the cut.
				after = msgs[len(msgs)-1].Seq
				if after%2 == 0 {
					continue
				}
				var seqs []uint64
				mu.Lock()
				for _, m := range msgs {
					acked[m.ID] = true
					seqs = append(seqs, m.Seq)
				}
				mu.Unlock()
				if err := q.Ack(seqs...); err != nil {
					return
				}
			}
		})
		pw.Wait()
		q.Close() // fails without power; it releases the files
	})
	return func() {
		cancel()
		wg.Wait()
	}
}

// powerCutBody is the body of message id: a few hundred bytes that say
// whose they are.
func powerCutBody(id string) []byte {
	return bytes.Repeat([]byte(id+";"), 300/(len(id)+1)+1)
}
