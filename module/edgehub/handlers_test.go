package edgehub

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/edgetpm/edgetpm/internal/emulator/hubemu"
	"github.com/edgetpm/edgetpm/internal/sas"
)

// Handlers run on the ctx of Run: when the session ends, an input, a
// method and a desired patch still being handled see their ctx end, and
// Run returns only once they have.
func TestHandlersEndWithRun(t *testing.T) {
	hub := bench(t, hubemu.Config{})
	entered, ended := make(chan string, 3), make(chan string, 3)
	release := make(chan struct{}) // frees handlers whose ctx never ends
	defer close(release)
	block := func(ctx context.Context, what string) {
		entered <- what
		select {
		case <-ctx.Done():
			ended <- what
		case <-release:
		}
	}
	connected := make(chan struct{}, 10)
	s, err := New(Config{
		Identity: Identity{HubHostName: hub.HubHostName(), DeviceID: "edge1", ModuleID: "relay", Host: hub.GatewayHostName(), Address: hub.Addr},
		Signer:   sas.Key(moduleKey),
		RootCAs:  hub.Pool,
		Input: func(ctx context.Context, _ string, _ *Message) error {
			block(ctx, "input")
			return ctx.Err()
		},
		Method: func(ctx context.Context, _ string, _ []byte) (int, []byte) {
			block(ctx, "method")
			return 503, []byte(`{}`)
		},
		Desired:   func(ctx context.Context, _ []byte) { block(ctx, "desired") },
		Connected: func(context.Context) { connected <- struct{}{} },
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	<-connected

	tctx := t.Context()
	if err := hub.SendToInput(tctx, "edge1", "relay", "readings", hubemu.Message{Body: []byte("x"), System: map[string]string{"$.mid": "in-1"}}); err != nil {
		t.Fatal(err)
	}
	invoked := make(chan struct{})
	go func() {
		defer close(invoked)
		hub.InvokeMethod(tctx, "edge1", "relay", "flush", json.RawMessage(`{}`), 2*time.Second)
	}()
	defer func() { <-invoked }()
	if _, err := hub.UpdateDesired("edge1", "relay", json.RawMessage(`{"output":"x"}`)); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		select {
		case <-entered:
		case <-time.After(30 * time.Second):
			t.Fatal("the three handlers did not all start")
		}
	}

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Run = %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Run did not return after its ctx ended")
	}
	// Run has returned: every handler has seen its ctx end already.
	got := map[string]bool{}
	for range 3 {
		select {
		case what := <-ended:
			got[what] = true
		default:
		}
	}
	for _, what := range []string{"input", "method", "desired"} {
		if !got[what] {
			t.Errorf("the %s handler was still running, its ctx alive, when Run returned", what)
		}
	}
}
