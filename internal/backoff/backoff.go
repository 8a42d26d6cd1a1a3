// Package backoff is the one retry schedule of this project: exponential
// delays with jitter, capped, that a server's retry-after overrides.
package backoff

import (
	"context"
	"math/rand/v2"
	"time"
)

// Backoff hands out growing delays. The zero value starts at 1 s and stops
// growing at 1 min. It is not safe for concurrent use.
type Backoff struct {
	// Base is the first delay; Max caps the growth.
	Base, Max time.Duration
	attempt   int
}

// Next returns the next delay: Base·2ⁿ capped at Max, of which a random
// half is taken off ("equal jitter"), so that a fleet of devices that lost
// the same server do not come back in step.
func (b *Backoff) Next() time.Duration {
	base, limit := b.Base, b.Max
	if base <= 0 {
		base = time.Second
	}
	if limit <= 0 {
		limit = time.Minute
	}
	d := base
	for i := 0; i < b.attempt && d < limit; i++ {
		d *= 2
	}
	d = min(d, limit)
	b.attempt++
	return d/2 + rand.N(d/2+1)
}

// Reset starts the schedule over, after a success.
func (b *Backoff) Reset() { b.attempt = 0 }

// Jitter returns d lengthened by up to a tenth, at random.
func Jitter(d time.Duration) time.Duration { return d + rand.N(d/10+1) }

// Sleep waits for d or until ctx ends, whichever comes first, and returns
// ctx's error in the second case.
func Sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return context.Cause(ctx)
	}
}
