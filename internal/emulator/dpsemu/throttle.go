package dpsemu

import (
	"fmt"
	"net/http"
	"sync"
	"time"
)

// limiter admits at most limit operations in any window: a sliding
// window, the strictest reading of DPS's "1,000/min/service", so a client
// paced to pass here passes DPS under any window DPS may use. It is safe
// for concurrent use.
type limiter struct {
	limit  int
	window time.Duration

	mu sync.Mutex
	// times holds the admitted operations still inside the window,
	// oldest first.
	times []time.Time
}

func newLimiter(limit int, window time.Duration) *limiter {
	return &limiter{limit: limit, window: window}
}

// take admits n operations at now and returns 0, or admits none and
// returns how long until n could pass. n must not exceed the limit.
func (l *limiter) take(now time.Time, n int) time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	// An operation counts while it is less than a window old.
	i := 0
	for i < len(l.times) && !l.times[i].Add(l.window).After(now) {
		i++
	}
	l.times = l.times[i:]
	over := len(l.times) + n - l.limit
	if over <= 0 {
		for range n {
			l.times = append(l.times, now)
		}
		return 0
	}
	// The over oldest must leave the window first.
	return l.times[min(over, len(l.times))-1].Add(l.window).Sub(now)
}

// admit charges n operations to the service API's rate limit, or answers
// 429 with retry-after, the whole seconds until they would pass, and
// reports whether the request may go on.
func (s *Server) admit(w http.ResponseWriter, n int) bool {
	if s.limiter == nil {
		return true
	}
	wait := s.limiter.take(s.clock(), n)
	if wait <= 0 {
		return true
	}
	secs := int((wait + time.Second - 1) / time.Second)
	s.log.Info().Int("operations", n).Int("retry_after", secs).Msg("service API throttled")
	setRetryAfter(w, secs)
	s.writeError(w, http.StatusTooManyRequests, codeThrottled,
		fmt.Sprintf("Too many requests: this DPS instance allows %d service operations per minute.", s.limiter.limit))
	return false
}
