package relay

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"fmt"
	"io"
	"testing"
	"time"

	"github.com/edgetpm/edgetpm/internal/emulator/hubemu"
	"github.com/edgetpm/edgetpm/internal/testharness/until"
	"github.com/edgetpm/edgetpm/module/queue"
	"github.com/edgetpm/edgetpm/module/twin"
)

// costRun sends n readings of size bytes through a relay configured
// with b (nil: one reading per message) and returns what reached the
// emulator's $upstream once the queue is empty.
func costRun(tb testing.TB, b *twin.Batching, n, size int) []hubemu.Message {
	tb.Helper()
	p := start(tb, config(func(c *twin.Config) {
		if b != nil {
			c.Batching = *b
		}
	}))
	c := *p.r.config.Load()
	c.InFlight = 32
	p.r.SetConfig(c)
	ctx := tb.Context()
	gen := newPlant(1)
	var msgs []*queue.Message
	for i := range n {
		msgs = append(msgs, &queue.Message{ID: fmt.Sprintf("r%06d", i), Source: "mqtt:plc", Output: "telemetry", Body: gen.reading(size),
			ContentType: "application/json", ContentEncoding: "utf-8",
			Properties: map[string]string{"mqtt-topic": "plant/north/line3/press7", "line": "3"}})
		if len(msgs) == 500 || i == n-1 {
			if err := p.r.Append(ctx, msgs...); err != nil {
				tb.Fatal(err)
			}
			msgs = nil
		}
	}
	until.True(tb, "the queue to empty", func() bool {
		if _, err := p.r.Flush(ctx); err != nil {
			tb.Fatal(err)
		}
		return p.q.Stats().Depth == 0
	})
	return p.hub.Upstream()
}

// readings decodes what reached $upstream back into the readings, in
// order, gunzipping batches marked $.ce=gzip.
func readings(tb testing.TB, up []hubemu.Message) [][]byte {
	tb.Helper()
	var out [][]byte
	for _, m := range up {
		if m.Properties["batch-count"] == "" {
			out = append(out, m.Body)
			continue
		}
		body := m.Body
		if m.System["$.ce"] == "gzip" {
			r, err := gzip.NewReader(bytes.NewReader(body))
			if err != nil {
				tb.Fatalf("batch %s: %v", m.System["$.mid"], err)
			}
			if body, err = io.ReadAll(r); err != nil {
				tb.Fatalf("batch %s: %v", m.System["$.mid"], err)
			}
		}
		var batch []json.RawMessage
		if err := json.Unmarshal(body, &batch); err != nil {
			tb.Fatalf("batch %s: %v", m.System["$.mid"], err)
		}
		if fmt.Sprint(len(batch)) != m.Properties["batch-count"] {
			tb.Fatalf("batch %s holds %d readings, batch-count says %s", m.System["$.mid"], len(batch), m.Properties["batch-count"])
		}
		for _, r := range batch {
			out = append(out, r)
		}
	}
	return out
}

func units(up []hubemu.Message) int {
	n := 0
	for _, m := range up {
		n += m.Units
	}
	return n
}

// At its best settings, batching costs at most 5% more 4 KB units than
// the readings' bytes would fill, as the emulator meters what the real
// relay path sends; gzip batches come back whole, marked for consumers,
// and cost fewer units still.
func TestBatchingCost(t *testing.T) {
	const n, size = 3000, 256
	ideal := float64(n*size) / 4096
	best := twin.Batching{Enabled: true, MaxBytes: 262144, MaxMessages: 10000, Linger: twin.Duration(time.Hour), Compression: "none"}
	up := costRun(t, &best, n, size)
	if got := readings(t, up); len(got) != n {
		t.Fatalf("%d readings upstream, want %d", len(got), n)
	}
	if u := units(up); float64(u) > 1.05*ideal {
		t.Errorf("batched at best: %d units for %.1f ideal (%.3fx), want at most 1.05x", u, ideal, float64(u)/ideal)
	}

	gz := best
	gz.Compression = "gzip"
	up = costRun(t, &gz, n, size)
	for _, m := range up {
		if m.System["$.ce"] != "gzip" || m.System["$.ct"] != "application/json" {
			t.Fatalf("a gzip batch marked $.ct=%q $.ce=%q, want application/json and gzip", m.System["$.ct"], m.System["$.ce"])
		}
	}
	got := readings(t, up)
	if len(got) != n {
		t.Fatalf("%d readings upstream from gzip batches, want %d", len(got), n)
	}
	want := newPlant(1)
	for i, r := range got {
		if w := want.reading(size); !bytes.Equal(r, w) {
			t.Fatalf("reading %d = %s, want %s", i, r, w)
		}
	}
	if u := units(up); float64(u) > ideal/1.5 {
		t.Errorf("gzip batches: %d units for %.1f ideal uncompressed, want at least 1.5 times fewer", u, ideal)
	}
}

// A gzip batch that compresses worse than the last one did (the packer's
// estimate) is not sent over maxBytes: it goes again in halves, and every
// reading arrives.
func TestGzipWorseThanEstimated(t *testing.T) {
	p := start(t, config(func(c *twin.Config) {
		c.Batching = twin.Batching{Enabled: true, MaxBytes: 4096, MaxMessages: 10000, Linger: twin.Duration(time.Hour), Compression: "gzip"}
	}))
	ctx := t.Context()
	rng := newPlant(7).rng
	var msgs []*queue.Message
	for i := range 400 {
		body := fmt.Sprintf(`{"i":%d,"v":"%s"}`, i, bytes.Repeat([]byte("a"), 200)) // squeezes to nothing
		if i >= 200 {
			noise := make([]byte, 100)
			for j := range noise {
				noise[j] = "0123456789abcdef"[rng.IntN(16)]
			}
			body = fmt.Sprintf(`{"i":%d,"v":"%s"}`, i, noise) // hardly at all
		}
		msgs = append(msgs, &queue.Message{ID: fmt.Sprint("g", i), Source: "mqtt:s", Output: "telemetry", Body: []byte(body)})
	}
	if err := p.r.Append(ctx, msgs...); err != nil {
		t.Fatal(err)
	}
	until.True(t, "the queue to empty", func() bool {
		if _, err := p.r.Flush(ctx); err != nil {
			t.Fatal(err)
		}
		return p.q.Stats().Depth == 0
	})
	up := p.hub.Upstream()
	if got := readings(t, up); len(got) != len(msgs) {
		t.Fatalf("%d readings upstream, want %d", len(got), len(msgs))
	}
	for _, m := range up {
		if m.Billed > 4096 {
			t.Errorf("a batch of %s readings metered %d bytes, over maxBytes 4096", m.Properties["batch-count"], m.Billed)
		}
	}
}
