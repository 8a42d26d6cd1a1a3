package testclock

import (
	"sync"
	"testing"
	"time"
)

func TestClock(t *testing.T) {
	t0 := time.Date(2026, 11, 23, 10, 0, 0, 123456789, time.UTC)
	c := New(t0)
	if got := c.Now(); !got.Equal(t0) {
		t.Errorf("Now() = %v, want %v", got, t0)
	}
	time.Sleep(time.Millisecond)
	if got := c.Now(); !got.Equal(t0) {
		t.Errorf("Now() after a real millisecond = %v, want %v still", got, t0)
	}
	var wg sync.WaitGroup
	for range 10 {
		wg.Go(func() { c.Add(time.Minute); _ = c.Now() })
	}
	wg.Wait()
	if got, want := c.Now(), t0.Add(10*time.Minute); !got.Equal(want) {
		t.Errorf("Now() after 10 Add(time.Minute) = %v, want %v", got, want)
	}
}
