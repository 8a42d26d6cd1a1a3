package relay

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/edgetpm/edgetpm/internal/testharness/until"
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
