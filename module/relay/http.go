package relay

import (
	"fmt"
	"net/http"
)

// Handler serves /metrics (Prometheus), /healthz (liveness: the publisher
// runs) and /readyz (readiness: it runs and the hub connection is up).
// IoT Edge's own modules expose metrics on port 9600, where Azure
// Monitor's metrics-collector module scrapes.
func (r *Relay) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", r.Metrics.Handler())
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		if !r.running.Load() {
			http.Error(w, "publisher not running", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		switch {
		case !r.running.Load():
			http.Error(w, "publisher not running", http.StatusServiceUnavailable)
		case !r.Metrics.Connected():
			http.Error(w, "not connected to the hub; intake is queued", http.StatusServiceUnavailable)
		default:
			fmt.Fprintln(w, "ready")
		}
	})
	return mux
}
