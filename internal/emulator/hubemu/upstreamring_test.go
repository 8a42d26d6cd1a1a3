package hubemu

import (
	"encoding/json"
	"net/http/httptest"
	"strconv"
	"testing"
)

// The emulator keeps the last UpstreamKeep messages of $upstream; a client
// asking from an index it dropped gets them from the oldest kept, and the
// answer's X-Upstream-From says where that is.
func TestUpstreamKeepsTheLast(t *testing.T) {
	s, err := New(Config{Key: noKey, UpstreamKeep: 3})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		s.appendUpstream(Message{Body: []byte(strconv.Itoa(i))})
	}
	for _, tc := range []struct {
		from, want int
		bodies     string
	}{{0, 2, "234"}, {3, 3, "34"}, {5, 5, ""}, {9, 5, ""}} {
		msgs, from := s.UpstreamFrom(tc.from)
		got := ""
		for _, m := range msgs {
			got += string(m.Body)
		}
		if from != tc.want || got != tc.bodies {
			t.Errorf("UpstreamFrom(%d) = %q from %d, want %q from %d", tc.from, got, from, tc.bodies, tc.want)
		}
	}
	if n := len(s.Upstream()); n != 3 {
		t.Errorf("Upstream() has %d messages, want 3", n)
	}

	rec := httptest.NewRecorder()
	s.serveUpstream(rec, httptest.NewRequest("GET", "/messages/upstream?from=1", nil))
	var got []Message
	if err := json.Unmarshal(rec.Body.Bytes(), &got); err != nil || rec.Code != 200 {
		t.Fatalf("GET ?from=1 = %d %s (%v)", rec.Code, rec.Body, err)
	}
	if h := rec.Header().Get("X-Upstream-From"); h != "2" || len(got) != 3 || string(got[0].Body) != "2" {
		t.Errorf("GET ?from=1: X-Upstream-From %q, %d messages", h, len(got))
	}
}
