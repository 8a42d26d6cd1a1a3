package main

import (
	"net/http"
	"time"
)

// metricsServer serves h, the relay's /metrics, /healthz and /readyz.
// Every phase of a connection is bounded, so that clients that connect
// and stall, or hold idle connections open, cannot pile up in the relay:
// a scrape is one small request answered at once.
func metricsServer(h http.Handler) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       time.Minute,
		MaxHeaderBytes:    16 << 10,
	}
}
