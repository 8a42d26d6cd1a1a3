package relay

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/edgetpm/edgetpm/module/edgehub"
	"github.com/edgetpm/edgetpm/module/queue"
	"github.com/edgetpm/edgetpm/module/twin"
)

// feedStore is a queue whose Read hands out the batches fed to it.
type feedStore struct {
	feed  chan []*queue.Message
	reads chan struct{} // a send for every batch handed out
}

func (s *feedStore) Append(context.Context, ...*queue.Message) error { return nil }
func (s *feedStore) Ack(...uint64) error                             { return nil }
func (s *feedStore) Pending(uint64) bool                             { return true }
func (s *feedStore) Stats() queue.Stats                              { return queue.Stats{} }
func (s *feedStore) Read(ctx context.Context, _ uint64, _ int) ([]*queue.Message, error) {
	select {
	case b := <-s.feed:
		s.reads <- struct{}{}
		return b, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// stuckHub never connects; each value on fail makes one wait fail.
type stuckHub struct{ fail chan struct{} }

func (h *stuckHub) WaitConnected(ctx context.Context, _ uint64) (uint64, error) {
	select {
	case <-h.fail:
		return 0, errors.New("not connected")
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}

func (h *stuckHub) SendOn(uint64, string, *edgehub.Message) (edgehub.Pending, error) {
	return edgehub.Pending{}, errors.New("never connected")
}

func (h *stuckHub) Size(_ string, m *edgehub.Message) int { return len(m.Body) }
func (h *stuckHub) Fits(_ string, m *edgehub.Message) bool {
	return h.Size("", m) <= edgehub.MaxMessageSize
}

func batch(from, n int) []*queue.Message {
	out := make([]*queue.Message, n)
	for i := range out {
		out[i] = &queue.Message{Seq: uint64(from + i), ID: fmt.Sprint(from + i), Source: "mqtt:s", Body: []byte("1")}
	}
	return out
}

// Run returns when its context ends during a flush, even with a worker's
// inbox full and a batch read from the queue waiting (it used to block on
// the full inbox for ever, in about a third of the runs).
func TestShutdownDuringFlush(t *testing.T) {
	for i := range 10 {
		s := &feedStore{feed: make(chan []*queue.Message), reads: make(chan struct{}, 2)}
		h := &stuckHub{fail: make(chan struct{})}
		r := New(s, h, twin.Defaults(), Options{})
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- r.Run(ctx) }()

		// The worker takes one and waits for a connection; 64 fill its
		// inbox, and Run waits to hand over the last.
		s.feed <- batch(1, 66)
		<-s.reads
		// Another batch and a flush, both waiting for Run.
		s.feed <- batch(67, 1)
		<-s.reads
		flushed := make(chan struct{})
		go func() {
			r.Flush(ctx)
			close(flushed)
		}()
		time.Sleep(20 * time.Millisecond) // for Flush to wait on Run
		// The worker moves on to its next message: Run hands over the
		// last, fills the inbox again, and takes the flush or the batch.
		h.fail <- struct{}{}
		time.Sleep(20 * time.Millisecond)
		cancel()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Fatalf("run %d: Run did not return 5 s after its context ended", i)
		}
		<-flushed
	}
}
