package dpsemu

import (
	"net/http"
)

type fault int

const (
	noFault fault = iota
	faultReset
	faultServerError
	faultThrottle
)

// takeFault consumes the next pending fault of f, resets first, once
// f.Skip requests have gone through untouched.
func (s *Server) takeFault(f *Faults) (fault, int) {
	s.faultMu.Lock()
	defer s.faultMu.Unlock()
	switch {
	case f.Skip > 0:
		f.Skip--
	case f.Resets > 0:
		f.Resets--
		return faultReset, 0
	case f.ServerErrors > 0:
		f.ServerErrors--
		return faultServerError, 0
	case f.Throttle > 0:
		f.Throttle--
		ra := f.ThrottleRetryAfter
		if ra <= 0 {
			ra = s.retryAfter
		}
		return faultThrottle, ra
	}
	return noFault, 0
}

// injectFault answers the request with the next pending fault of f, if
// any, and reports whether it did. It runs before anything else looks at
// the request, so a faulted request changes no state and costs nothing
// against the service API's rate limit.
func (s *Server) injectFault(w http.ResponseWriter, r *http.Request, f *Faults) bool {
	kind, retryAfter := s.takeFault(f)
	switch kind {
	case faultReset:
		s.log.Info().Str("path", r.URL.Path).Msg("fault: connection reset")
		reset(w)
	case faultServerError:
		s.log.Info().Str("path", r.URL.Path).Msg("fault: service unavailable")
		s.writeError(w, http.StatusServiceUnavailable, codeUnavailable, "Service unavailable (injected fault).")
	case faultThrottle:
		s.log.Info().Str("path", r.URL.Path).Msg("fault: throttled")
		// Clients retry 429 after retry-after (docs/dps-protocol.md#errors).
		setRetryAfter(w, retryAfter)
		s.writeError(w, http.StatusTooManyRequests, codeThrottled, "Too many requests (injected fault).")
	default:
		return false
	}
	return true
}

// reset cuts the connection after part of a status line and header, like a
// proxy dying mid-response. Under HTTP/2, which cannot be hijacked, the
// stream is reset instead.
func reset(w http.ResponseWriter) {
	if hj, ok := w.(http.Hijacker); ok {
		if conn, buf, err := hj.Hijack(); err == nil {
			buf.WriteString("HTTP/1.1 200 OK\r\nContent-Type: applica")
			buf.Flush()
			conn.Close()
			return
		}
	}
	panic(http.ErrAbortHandler)
}
