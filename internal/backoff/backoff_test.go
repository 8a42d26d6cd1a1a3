package backoff

import (
	"context"
	"errors"
	"testing"
	"testing/synctest"
	"time"
)

func TestNext(t *testing.T) {
	b := Backoff{Base: 100 * time.Millisecond, Max: time.Second}
	// Each delay lies in [d/2, d] for d = 100ms, 200ms, ... capped at 1s.
	for i, d := range []time.Duration{100, 200, 400, 800, 1000, 1000, 1000} {
		d *= time.Millisecond
		got := b.Next()
		if got < d/2 || got > d {
			t.Errorf("delay %d = %v, want within [%v, %v]", i, got, d/2, d)
		}
	}
	b.Reset()
	if got := b.Next(); got > 100*time.Millisecond {
		t.Errorf("delay after Reset = %v, want at most 100ms", got)
	}
	var zero Backoff
	if got := zero.Next(); got < 500*time.Millisecond || got > time.Second {
		t.Errorf("zero Backoff first delay = %v, want within [500ms, 1s]", got)
	}
	for range 100 {
		zero.Next()
	}
	if got := zero.Next(); got < 30*time.Second || got > time.Minute {
		t.Errorf("zero Backoff after many attempts = %v, want within [30s, 1m]", got)
	}
}

func TestJitter(t *testing.T) {
	seen := map[time.Duration]bool{}
	for range 50 {
		got := Jitter(2 * time.Second)
		if got < 2*time.Second || got > 2200*time.Millisecond {
			t.Fatalf("Jitter(2s) = %v, want within [2s, 2.2s]", got)
		}
		seen[got] = true
	}
	if len(seen) < 2 {
		t.Error("Jitter gave the same value 50 times")
	}
}

func TestSleep(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		start := time.Now()
		if err := Sleep(t.Context(), 3*time.Second); err != nil {
			t.Fatal(err)
		}
		if got := time.Since(start); got != 3*time.Second {
			t.Errorf("slept %v, want 3s", got)
		}
		cause := errors.New("stopped")
		ctx, cancel := context.WithCancelCause(t.Context())
		time.AfterFunc(time.Second, func() { cancel(cause) })
		start = time.Now()
		if err := Sleep(ctx, time.Hour); !errors.Is(err, cause) {
			t.Errorf("Sleep after cancel = %v, want %v", err, cause)
		}
		if got := time.Since(start); got != time.Second {
			t.Errorf("Sleep returned after %v, want 1s", got)
		}
	})
}
