package edgehub

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/edgetpm/edgetpm/internal/emulator/hubemu"
)

// A message goes out when it fits both of edgeHub's limits and is refused
// before sending otherwise: the routing size (body and properties) and
// the PUBLISH packet's length, whose topic carries the escaped properties.
// A message under the first but over the second used to go out, and the
// hub closed the connection, again after every reconnect.
func TestSizeLimits(t *testing.T) {
	hub := bench(t, hubemu.Config{})
	s := start(t, hub, Config{})
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	props := map[string]string{"note": strings.Repeat(" ", 100)} // 100 bytes, 300 escaped
	m := &Message{ID: "fits", Properties: props}
	head := s.Size("out", m)
	if s.Size("out", &Message{ID: "fits", Properties: props, Body: []byte("abc")}) != head+3 {
		t.Fatal("Size is not linear in the body")
	}
	m.Body = make([]byte, MaxMessageSize-head)
	if err := s.Publish(ctx, "out", m); err != nil {
		t.Fatalf("Publish of a message of Size %d = %v", s.Size("out", m), err)
	}
	if _, err := hub.WaitUpstream(ctx, 1); err != nil {
		t.Fatal(err)
	}
	over := &Message{ID: "over", Properties: props, Body: make([]byte, MaxMessageSize-head+1)}
	sys := over.systemProps("out")
	if _, n := appendBag(nil, sys[:], props); len(over.Body)+n > MaxMessageSize {
		t.Fatalf("routing size %d: the test wants one under the limit", len(over.Body)+n)
	}
	if err := s.Publish(ctx, "out", over); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("Publish of a packet over the limit = %v, want ErrTooLarge", err)
	}
}
