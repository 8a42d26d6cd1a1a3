package relay

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/edgetpm/edgetpm/internal/testharness/until"
	"github.com/edgetpm/edgetpm/module/edgehub"
	"github.com/edgetpm/edgetpm/module/queue"
	"github.com/edgetpm/edgetpm/module/twin"
)

// With batching.maxBytes at edgeHub's limit, every batch fits on the
// wire, brackets, commas, batch-count and system properties included:
// nothing is dropped as too large (512 of 600 readings were).
func TestFullBatchesFit(t *testing.T) {
	p := start(t, config(func(c *twin.Config) {
		c.Batching = twin.Batching{Enabled: true, MaxBytes: 262144, MaxMessages: 1000, Linger: twin.Duration(time.Hour)}
	}))
	ctx := t.Context()
	const n = 600
	for i := range n {
		body := fmt.Sprintf(`{"i":%d,"pad":"`, i)
		body += strings.Repeat("p", 1023-len(body)-2) + `"}`
		m := &queue.Message{ID: fmt.Sprint("r", i), Source: "mqtt:s", Output: "telemetry", Body: []byte(body),
			Properties: map[string]string{"mqtt-topic": "plant/line3/press", "site": "north"}}
		if err := p.r.Append(ctx, m); err != nil {
			t.Fatal(err)
		}
	}
	until.True(t, "the queue to empty", func() bool {
		if _, err := p.r.Flush(ctx); err != nil {
			t.Fatal(err)
		}
		return p.q.Stats().Depth == 0
	})
	got := 0
	for _, m := range p.hub.Upstream() {
		var batch []json.RawMessage
		if m.Properties["batch-count"] == "" {
			got++ // a batch of one goes as itself
		} else if err := json.Unmarshal(m.Body, &batch); err != nil {
			t.Fatalf("upstream body %.40s…: %v", m.Body, err)
		}
		got += len(batch)
	}
	if up := len(p.hub.Upstream()); up > 4 {
		t.Errorf("%d publishes for %d KiB of readings; want full batches, at most 4", up, n)
	}
	if got != n {
		t.Errorf("%d readings upstream, want %d; metrics:\n%s", got, n, scrape(t, p.r))
	}
}

// A message that can never be delivered is dead-lettered, counted, and
// the others flow: too large at intake from a source or an input, and
// too large once queued (its output grew meanwhile).
func TestDeadLetters(t *testing.T) {
	p := start(t, config(nil))
	ctx := t.Context()
	big := make([]byte, 300<<10)
	msgs := []*queue.Message{
		{ID: "a", Source: "mqtt:s", Output: "telemetry", Body: []byte("1")},
		{ID: "big", Source: "mqtt:s", Output: "telemetry", Body: big, Properties: map[string]string{"mqtt-topic": "plant/x"}},
		{ID: "b", Source: "mqtt:s", Output: "telemetry", Body: []byte("2")},
	}
	if err := p.r.Append(ctx, msgs...); err != nil {
		t.Fatal(err)
	}
	if err := p.r.Append(ctx, msgs[1]); err != nil { // a repeated call, after a failure
		t.Fatal(err)
	}
	if err := p.r.Input(ctx, "in", &edgehub.Message{ID: "big-input", Body: big}); err != nil {
		t.Fatalf("Input of a message over 256 KiB = %v, want it dead-lettered", err)
	}
	// Fits alone with a short output, not with the one it is sent to.
	edge := &queue.Message{ID: "edge", Source: "mqtt:t", Output: strings.Repeat("o", 200), Body: make([]byte, 262000)}
	if err := p.q.Append(ctx, edge, &queue.Message{ID: "c", Source: "mqtt:t", Output: "telemetry", Body: []byte("3")}); err != nil {
		t.Fatal(err)
	}
	up, err := p.hub.WaitUpstream(ctx, 3)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range up {
		if len(m.Body) > 1 {
			t.Errorf("a message of %d bytes went upstream", len(m.Body))
		}
	}
	until.True(t, "the queue to empty", func() bool { return p.q.Stats().Depth == 0 })
	letters, _, _ := p.dead.List("", 10)
	got := map[string]string{}
	for _, l := range letters {
		got[l.MessageID] = l.Reason + " " + l.Source
	}
	want := map[string]string{"big": "too_large mqtt:s", "big-input": "too_large edgehub:in", "edge": "too_large mqtt:t"}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("dead letters %v, want %v", got, want)
	}
	if m := scrape(t, p.r); !strings.Contains(m, `edgerelay_dead_letters_total{reason="too_large"} 3`) || !strings.Contains(m, "edgerelay_dead_letters_stored 3") {
		t.Errorf("metrics:\n%s", m)
	}
}
