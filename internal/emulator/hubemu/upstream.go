package hubemu

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"time"
)

// maxUpstreamWait bounds how long GET /messages/upstream?wait= holds a
// request open.
const maxUpstreamWait = 60 * time.Second

// serveUpstream answers GET /messages/upstream (emulator only; the
// service API's authentication applies): the messages routed to
// $upstream, in arrival order, from the index in "from" (default 0) on.
// With "wait" (a Go duration up to 60s), a request that would answer
// none waits until one arrives or the time is up, so that a client
// follows the stream with one request per batch (edge-deploy lab
// messages --follow). The answer is a JSON array of Message; the index of
// its first element is in the X-Upstream-From header: higher than "from"
// when the messages from there on are no longer kept (Config.UpstreamKeep),
// lower when "from" is past the last message (the hub restarted).
func (s *Server) serveUpstream(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	from := 0
	if v := q.Get("from"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			writeError(w, http.StatusBadRequest, "ErrorCode:ArgumentInvalid;from must be an index of 0 or more")
			return
		}
		from = n
	}
	var wait time.Duration
	if v := q.Get("wait"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d < 0 || d > maxUpstreamWait {
			writeError(w, http.StatusBadRequest, "ErrorCode:ArgumentInvalid;wait must be a duration of 0 to 60s")
			return
		}
		wait = d
	}
	if wait > 0 {
		ctx, cancel := context.WithTimeout(r.Context(), wait)
		_, err := s.WaitUpstream(ctx, from+1)
		cancel()
		if err != nil && r.Context().Err() != nil {
			return // the client left
		}
		// Time up or the hub stopping: answer what there is.
		if err != nil && !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, ErrStopped) {
			writeServiceError(w, err)
			return
		}
	}
	msgs, from := s.UpstreamFrom(from)
	w.Header().Set("X-Upstream-From", strconv.Itoa(from))
	writeJSON(w, http.StatusOK, msgs)
}
