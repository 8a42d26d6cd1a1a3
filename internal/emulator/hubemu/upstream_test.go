package hubemu_test

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/edgetpm/edgetpm/internal/emulator/hubemu"
)

// GET /messages/upstream?from=N answers the messages from index N on;
// with wait it holds the request until one arrives, or answers none when
// the time is up.
func TestUpstreamFollow(t *testing.T) {
	s := start(t, nil)
	tc := newTwinClient(t, s, "a", keyA, nil)
	get := func(query string) (int, []hubemu.Message, string) {
		t.Helper()
		code, body, h := request(t, s, "GET", "/messages/upstream"+api+query, "", nil)
		var up []hubemu.Message
		if code == 200 {
			if err := json.Unmarshal(body, &up); err != nil {
				t.Fatalf("GET /messages/upstream%s: %v: %s", query, err, body)
			}
		}
		return code, up, h.Get("X-Upstream-From")
	}

	start := time.Now()
	if code, up, from := get("&from=0&wait=300ms"); code != 200 || len(up) != 0 || from != "0" {
		t.Errorf("wait on nothing = %d %d messages from %q", code, len(up), from)
	}
	if d := time.Since(start); d < 250*time.Millisecond {
		t.Errorf("wait=300ms answered after %v", d)
	}

	got := make(chan []hubemu.Message, 1)
	go func() {
		_, up, _ := get("&from=0&wait=10s")
		got <- up
	}()
	time.Sleep(100 * time.Millisecond)
	wait(t, "publish", tc.c.Publish("devices/edge1/modules/a/messages/events/%24.on=up&n=1", 1, false, "one"))
	select {
	case up := <-got:
		if len(up) != 1 || string(up[0].Body) != "one" || up[0].Properties["n"] != "1" {
			t.Errorf("waiting request = %+v, want message one", up)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a waiting request did not answer the message that arrived")
	}

	wait(t, "publish", tc.c.Publish("devices/edge1/modules/a/messages/events/%24.on=up&n=2", 1, false, "two"))
	if _, err := s.WaitUpstream(t.Context(), 2); err != nil {
		t.Fatal(err)
	}
	if code, up, from := get("&from=1"); code != 200 || len(up) != 1 || string(up[0].Body) != "two" || from != "1" {
		t.Errorf("from=1 = %d %+v from %q, want message two", code, up, from)
	}
	if code, up, from := get("&from=9"); code != 200 || len(up) != 0 || from != "2" {
		t.Errorf("from past the end = %d %d messages from %q, want none from 2", code, len(up), from)
	}
	for _, q := range []string{"&from=-1", "&from=x", "&wait=2m", "&wait=soon"} {
		if code, _, _ := get(q); code != 400 {
			t.Errorf("GET /messages/upstream%s = %d, want 400", q, code)
		}
	}
}
