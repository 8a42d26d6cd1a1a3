package relay

import (
	"context"

	"golang.org/x/time/rate"

	"github.com/edgetpm/edgetpm/module/edgehub"
)

// setCap puts twin.Upstream.MaxBytesPerSecond into effect, for the sends
// that start waiting from now on; 0 is none.
func (r *Relay) setCap(bytesPerSecond int64) {
	if bytesPerSecond <= 0 {
		r.upstream.SetLimit(rate.Inf)
		return
	}
	// A burst of a tenth of a second: what starts at once after idling
	// stays small against the cap measured over seconds. A larger
	// publish waits for its bytes a burst at a time.
	r.upstream.SetBurst(max(1, int(bytesPerSecond/10)))
	r.upstream.SetLimit(rate.Limit(bytesPerSecond))
}

// throttle waits until out, to output, fits under the upstream cap, as
// the session's Size counts it; an error is ctx ending.
func (r *Relay) throttle(ctx context.Context, output string, out *edgehub.Message) error {
	lim := r.upstream
	if lim.Limit() == rate.Inf {
		return nil
	}
	for n := r.hub.Size(output, out); n > 0; {
		k := min(n, lim.Burst())
		if err := lim.WaitN(ctx, k); err != nil {
			return err
		}
		n -= k
	}
	return nil
}
