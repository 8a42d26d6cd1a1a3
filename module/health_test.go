package main

import (
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/edgetpm/edgetpm/internal/cli"
)

func TestHealth(t *testing.T) {
	serve := func(status int) string {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path != "/healthz" {
				http.NotFound(w, r)
				return
			}
			w.WriteHeader(status)
			io.WriteString(w, "publisher not running\n")
		}))
		t.Cleanup(srv.Close)
		return srv.Listener.Addr().String()
	}
	// A port nothing listens on: one that was just free.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := ln.Addr().String()
	ln.Close()
	_, okPort, _ := net.SplitHostPort(serve(http.StatusOK))

	tests := []struct {
		name, addr string
		want       string // "" for healthy, else part of the error
	}{
		{"200", serve(http.StatusOK), ""},
		{"empty host is loopback", ":" + okPort, ""},
		{"unspecified host is loopback", "0.0.0.0:" + okPort, ""},
		{"503", serve(http.StatusServiceUnavailable), "503 Service Unavailable: publisher not running"},
		{"no server", closed, "connection refused"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			getenv := func(k string) string {
				if k == "EDGE_RELAY_METRICS_ADDR" {
					return tt.addr
				}
				return ""
			}
			err := run(t.Context(), []string{"health"}, io.Discard, io.Discard, getenv)
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("health on %s = %v, want healthy", tt.addr, err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Fatalf("health on %s = %v, want an error with %q", tt.addr, err, tt.want)
			case tt.want != "" && cli.ExitCode(err) != 1:
				t.Fatalf("cli.ExitCode(%v) = %d, want 1", err, cli.ExitCode(err))
			}
		})
	}
}
