package lab

import (
	"context"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/edgetpm/edgetpm/internal/emulator/pki"
	"github.com/edgetpm/edgetpm/internal/tlsconfig"
)

// A request that waits on its context (a long poll) ends when serveHTTPS's
// context does, so shutdown does not wait out shutdownTimeout.
func TestServeHTTPSEndsLongPolls(t *testing.T) {
	ca, err := pki.NewCA()
	if err != nil {
		t.Fatal(err)
	}
	tc, err := ca.ServerTLS("127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	started := make(chan struct{})
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(started)
		<-r.Context().Done()
	})
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- serveHTTPS(ctx, ln, h, tc, zerolog.Nop()) }()
	hc := tlsconfig.HTTPClient(ca.Pool(), 0)
	go func() {
		if resp, err := hc.Get("https://" + ln.Addr().String() + "/poll"); err == nil {
			resp.Body.Close()
		}
	}()
	<-started
	begin := time.Now()
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("serveHTTPS: %v", err)
		}
		if d := time.Since(begin); d > shutdownTimeout/2 {
			t.Errorf("shutdown took %v", d)
		}
	case <-time.After(2 * shutdownTimeout):
		t.Fatal("serveHTTPS did not return")
	}
	hc.CloseIdleConnections()
}
