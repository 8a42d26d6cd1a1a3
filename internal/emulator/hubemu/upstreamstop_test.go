package hubemu_test

import (
	"context"
	"errors"
	"net"
	"testing"
	"time"

	"github.com/edgetpm/edgetpm/internal/emulator/hubemu"
	"github.com/edgetpm/edgetpm/internal/emulator/pki"
)

// WaitUpstream ends when the server stops, whatever its context.
func TestWaitUpstreamEndsOnStop(t *testing.T) {
	emu, err := hubemu.New(hubemu.Config{Key: keys})
	if err != nil {
		t.Fatal(err)
	}
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
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- emu.Serve(ctx, ln, tc) }()
	waited := make(chan error, 1)
	go func() {
		_, err := emu.WaitUpstream(context.Background(), 1)
		waited <- err
	}()
	time.Sleep(100 * time.Millisecond)
	cancel()
	if err := <-served; err != nil {
		t.Errorf("Serve: %v", err)
	}
	select {
	case err := <-waited:
		if !errors.Is(err, hubemu.ErrStopped) {
			t.Errorf("WaitUpstream = %v, want ErrStopped", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("WaitUpstream still waits after the server stopped")
	}
}
