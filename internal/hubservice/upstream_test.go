package hubservice

import (
	"net/http"
	"testing"
	"time"
)

// Upstream returns the index the hub answered from (X-Upstream-From),
// which is lower than asked after the hub restarted.
func TestUpstreamFrom(t *testing.T) {
	c := serve(t, func(w http.ResponseWriter, r *http.Request, body []byte) {
		if got := r.URL.Query().Get("from"); got != "7" {
			t.Errorf("from=%q", got)
		}
		w.Header().Set("X-Upstream-From", "2")
		w.Write([]byte(`[{"body":"aGk=","from":"dev/relay"}]`))
	})
	msgs, at, err := c.Upstream(t.Context(), 7, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if at != 2 || len(msgs) != 1 || string(msgs[0].Body) != "hi" {
		t.Errorf("Upstream = %d messages from %d", len(msgs), at)
	}

	bad := serve(t, func(w http.ResponseWriter, r *http.Request, body []byte) {
		w.Header().Set("X-Upstream-From", "x")
		w.Write([]byte(`[]`))
	})
	if _, _, err := bad.Upstream(t.Context(), 0, 0); err == nil {
		t.Error("Upstream took X-Upstream-From x")
	}
}
