package edgehub

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/edgetpm/edgetpm/internal/emulator/hubemu"
)

// A twin request whose answer is lost ends after TwinTimeout with
// ErrNoTwinAnswer, not when the connection does; the next one is
// answered on the same connection.
func TestTwinTimeout(t *testing.T) {
	hub := bench(t, hubemu.Config{})
	connected := make(chan struct{}, 10)
	s := start(t, hub, Config{TwinTimeout: 300 * time.Millisecond, Connected: func(context.Context) { connected <- struct{}{} }})
	<-connected
	for _, req := range []struct {
		name string
		do   func(ctx context.Context) error
	}{
		{"GET", func(ctx context.Context) error { _, err := s.GetTwin(ctx); return err }},
		{"reported patch", func(ctx context.Context) error { return s.ReportProperties(ctx, []byte(`{"a":1}`)) }},
	} {
		hub.LoseTwinAnswers(1)
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		begin := time.Now()
		err := req.do(ctx)
		cancel()
		if !errors.Is(err, ErrNoTwinAnswer) || time.Since(begin) > 5*time.Second {
			t.Errorf("%s with its answer lost = %v after %v, want ErrNoTwinAnswer after 300ms", req.name, err, time.Since(begin))
		}
		if err := req.do(t.Context()); err != nil {
			t.Errorf("%s after a lost answer = %v", req.name, err)
		}
	}
	if n := func() (n int) { s.pending.Range(func(any, any) bool { n++; return true }); return }(); n != 0 {
		t.Errorf("%d twin requests still pending", n)
	}
}
