package main

import (
	"net/http"
	"testing"
	"time"
)

// The metrics server bounds every phase of a connection, so that clients
// that connect and stall, or keep idle connections open, cannot pile up
// in the relay: reading headers, reading a request, writing an answer,
// and idling between requests.
func TestMetricsServerTimeouts(t *testing.T) {
	srv := metricsServer(http.NotFoundHandler())
	for _, tc := range []struct {
		name string
		d    time.Duration
	}{
		{"ReadHeaderTimeout", srv.ReadHeaderTimeout},
		{"ReadTimeout", srv.ReadTimeout},
		{"WriteTimeout", srv.WriteTimeout},
		{"IdleTimeout", srv.IdleTimeout},
	} {
		if tc.d <= 0 || tc.d > time.Minute {
			t.Errorf("%s = %v, want a bound of at most a minute", tc.name, tc.d)
		}
	}
	if srv.MaxHeaderBytes <= 0 || srv.MaxHeaderBytes > 64<<10 {
		t.Errorf("MaxHeaderBytes = %d, want at most 64 KiB", srv.MaxHeaderBytes)
	}
}
