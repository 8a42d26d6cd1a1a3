package relay

import (
	"context"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edgetpm/edgetpm/module/edgehub"
	"github.com/edgetpm/edgetpm/module/queue"
	"github.com/edgetpm/edgetpm/module/twin"
)

// slowStore takes appends slowly, counting the messages.
type slowStore struct {
	feedStore
	appended atomic.Int64
}

func (s *slowStore) Append(ctx context.Context, msgs ...*queue.Message) error {
	time.Sleep(20 * time.Millisecond)
	s.appended.Add(int64(len(msgs)))
	return nil
}

// Two deliveries of one input message at once queue it once: the check
// and the claim are one step (they used to be two, and both were queued).
func TestInputDedupeAtomic(t *testing.T) {
	s := &slowStore{}
	r := New(s, &stuckHub{}, twin.Defaults(), Options{})
	var wg sync.WaitGroup
	var taken atomic.Int64
	for range 8 {
		wg.Go(func() {
			if r.Input(t.Context(), "in", &edgehub.Message{ID: "same", Body: []byte("x")}) == nil {
				taken.Add(1)
			}
		})
	}
	wg.Wait()
	if n := s.appended.Load(); n != 1 {
		t.Errorf("one message delivered 8 times at once was queued %d times, want 1", n)
	}
	if taken.Load() == 0 {
		t.Error("no delivery was taken")
	}
	// Later deliveries are duplicates, acknowledged.
	if err := r.Input(t.Context(), "in", &edgehub.Message{ID: "same", Body: []byte("x")}); err != nil || s.appended.Load() != 1 {
		t.Errorf("a later redelivery: %v, %d queued", err, s.appended.Load())
	}
}

// The dedupe window holds bounded keys whatever the sender's $.mid: a long
// one is remembered by its digest.
func TestInputDedupeBoundedKeys(t *testing.T) {
	s := &slowStore{}
	r := New(s, &stuckHub{}, twin.Defaults(), Options{DedupeWindow: 4})
	long := strings.Repeat("m", 1<<20)
	for _, id := range []string{long, long + "2", "short"} {
		if err := r.Input(t.Context(), "in", &edgehub.Message{ID: id}); err != nil {
			t.Fatal(err)
		}
	}
	if err := r.Input(t.Context(), "in", &edgehub.Message{ID: long}); err != nil || s.appended.Load() != 3 {
		t.Errorf("redelivery of a long $.mid: %v, %d queued; want it recognized", err, s.appended.Load())
	}
	r.seen.mu.Lock()
	defer r.seen.mu.Unlock()
	for k := range r.seen.ids {
		if len(k) > maxKey {
			t.Errorf("a key of %d bytes is kept, want at most %d", len(k), maxKey)
		}
	}
}
