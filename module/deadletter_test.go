package main

import (
	"encoding/base64"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/edgetpm/edgetpm/internal/testharness/until"
)

// A flood of oversized and poison messages on a source leaves it
// flowing: the readings after them arrive upstream, the bad ones are in
// the dead-letter store, counted in the metrics and the reported summary,
// and an operator lists, fetches and purges them by direct method.
func TestPoisonFlood(t *testing.T) {
	metrics := freeAddr(t)
	e := startEdge(t, "--metrics-addr", metrics)
	p := startPlant(t, e, `,"queue":{"maxBytes":1048576},"reportInterval":"1s"`)

	big := strings.Repeat("b", 400<<10) // over IoT Hub's 256 KiB; three over the queue's 1 MiB at once
	huge := strings.Repeat("h", 3<<19)  // over the queue's bound alone
	var bad []string
	for range 4 {
		bad = append(bad, big, big, big, huge)
	}
	p.prod.Publish("plant/line1", bad...)
	want := p.publish(t, 50, 50, 0)
	until.Within(t, time.Minute, "the readings after the flood upstream", func() bool {
		got, _ := arrived(t, e.hub)
		return missing(want, got) == 0
	})
	for _, m := range e.hub.Upstream() {
		if len(m.Body) > 300 {
			t.Fatalf("a message of %d bytes went upstream", len(m.Body))
		}
	}

	call := func(method string, req any) (int, json.RawMessage) {
		t.Helper()
		payload, _ := json.Marshal(req)
		status, resp, err := e.hub.InvokeMethod(t.Context(), "edge1", "relay", method, payload, 10*time.Second)
		if err != nil {
			t.Fatalf("%s: %v", method, err)
		}
		return status, resp
	}
	var list struct {
		Letters []struct {
			ID, Reason, Source, Topic string
			Size                      int
		}
		Next string
	}
	status, resp := call("deadLetters.list", map[string]any{"limit": 100})
	if err := json.Unmarshal(resp, &list); status != 200 || err != nil || len(list.Letters) != len(bad) {
		t.Fatalf("deadLetters.list = %d %.300s (%v); want %d letters", status, resp, err, len(bad))
	}
	for i, l := range list.Letters {
		if l.Reason != "too_large" || l.Source != "mqtt:plc" || l.Topic != "plant/line1" || l.Size != len(bad[i]) {
			t.Errorf("letter %d = %+v, want too_large from mqtt:plc on plant/line1 of %d bytes", i, l, len(bad[i]))
		}
	}
	var got struct {
		Letter struct{ Size int }
		Body   string
		Next   int
	}
	var body []byte
	for off := 0; ; off = got.Next {
		status, resp = call("deadLetters.get", map[string]any{"id": list.Letters[0].ID, "offset": off})
		got.Next = 0
		if err := json.Unmarshal(resp, &got); status != 200 || err != nil {
			t.Fatalf("deadLetters.get = %d %.200s (%v)", status, resp, err)
		}
		chunk, _ := base64.StdEncoding.DecodeString(got.Body)
		body = append(body, chunk...)
		if got.Next == 0 {
			break
		}
	}
	if string(body) != big {
		t.Errorf("deadLetters.get gave %d bytes, want the %d published", len(body), len(big))
	}

	m := scrape(t, metrics)
	if m[`edgerelay_dead_letters_total{reason="too_large"}`] != float64(len(bad)) || m["edgerelay_dead_letters_stored"] != float64(len(bad)) {
		t.Errorf("metrics: %v dead letters too_large, %v stored; want %d", m[`edgerelay_dead_letters_total{reason="too_large"}`], m["edgerelay_dead_letters_stored"], len(bad))
	}
	until.True(t, "the dead letters in the reported summary", func() bool {
		tw, err := e.hub.Twin("edge1", "relay")
		if err != nil {
			t.Fatal(err)
		}
		var r struct {
			Summary struct {
				DeadLetters struct {
					Count int              `json:"count"`
					Added map[string]int64 `json:"added"`
				} `json:"deadLetters"`
			} `json:"summary"`
		}
		json.Unmarshal(tw.Reported, &r)
		return r.Summary.DeadLetters.Count == len(bad) && r.Summary.DeadLetters.Added["too_large"] == int64(len(bad))
	})

	status, resp = call("deadLetters.purge", map[string]any{"all": true})
	if status != 200 || string(resp) != `{"purged":16}` {
		t.Errorf("deadLetters.purge = %d %s", status, resp)
	}
	if st, ok := relayStats(t, e); !ok || st.DeadLetters == nil || st.DeadLetters.Count != 0 {
		t.Errorf("stats after purge: %+v", st.DeadLetters)
	}
}
