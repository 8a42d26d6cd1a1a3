package relay

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/edgetpm/edgetpm/module/deadletter"
	"github.com/edgetpm/edgetpm/module/edgehub"
	"github.com/edgetpm/edgetpm/module/queue"
	"github.com/edgetpm/edgetpm/module/twin"
)

// sizeHub measures as the session does for a module: the routing size or
// the packet's, whichever is larger, with the topic's escaping left out
// (a few bytes), plus pad.
type sizeHub struct {
	stuckHub
	pad int
}

func (h *sizeHub) Size(output string, m *edgehub.Message) int {
	n := len(m.Body) + len(output) + len(m.ID) + len(m.ContentType) + len(m.ContentEncoding) + 4*6
	for k, v := range m.Properties {
		n += len(k) + len(v) + 2
	}
	return n + 40 + h.pad
}

func reading(i, size int, props map[string]string) *queue.Message {
	body := fmt.Sprintf(`{"i":%d,"p":"`, i)
	body += strings.Repeat("x", max(0, size-2-len(body)))
	return &queue.Message{Seq: uint64(i + 1), ID: fmt.Sprint("r", i), Source: "mqtt:s", Output: "telemetry", Body: []byte(body + `"}`), Properties: props}
}

// pack runs msgs through a packer and returns the batches it made,
// flushing what is left at the end.
func pack(p *packer, b twin.Batching, msgs []*queue.Message) [][]*queue.Message {
	var out [][]*queue.Message
	for _, m := range msgs {
		out = append(out, p.add(m, b, time.Now())...)
	}
	if rest := p.flush(b); len(rest) > 0 {
		out = append(out, rest)
	}
	return out
}

// A batch never goes over batching.maxBytes as IoT Hub meters it (cut at
// a multiple of 4096 below it), edgeHub's 256 KiB, or maxMessages, and
// the batches hold every message, in order.
func TestPackerLimits(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for round := range 200 {
		b := twin.Batching{Enabled: true, MaxBytes: 1 + rng.IntN(256<<10), MaxMessages: 1 + rng.IntN(300), Compression: "none"}
		h := &sizeHub{pad: rng.IntN(200)}
		p := &packer{hub: h}
		var msgs []*queue.Message
		for i := range 400 {
			msgs = append(msgs, reading(i, 20+rng.IntN(3000), map[string]string{"mqtt-topic": "plant/a/" + strconv.Itoa(rng.IntN(2)), "line": "3"}))
		}
		var got []*queue.Message
		for _, batch := range pack(p, b, msgs) {
			got = append(got, batch...)
			if len(batch) > b.MaxMessages {
				t.Fatalf("round %d (%+v): a batch of %d", round, b, len(batch))
			}
			if len(batch) == 1 {
				continue // goes as itself
			}
			m := message(batch, nil)
			if billed, limit := edgehub.Billed(m), billedLimit(b.MaxBytes); billed > limit {
				t.Fatalf("round %d (%+v): a batch of %d meters %d bytes, over %d", round, b, len(batch), billed, limit)
			}
			if size := h.Size("telemetry", m); size > edgehub.MaxMessageSize {
				t.Fatalf("round %d (%+v): a batch of %d is %d bytes to edgeHub", round, b, len(batch), size)
			}
		}
		if !slices.Equal(got, msgs) {
			t.Fatalf("round %d: the batches hold %d messages, not the %d given in order", round, len(got), len(msgs))
		}
	}
}

// Batches end at 4 KB unit boundaries: whether cut by size or by count,
// a batch sent before the last wastes less of its last unit than one
// more reading would take.
func TestPackerFillsUnits(t *testing.T) {
	for _, b := range []twin.Batching{
		{MaxBytes: 65536, MaxMessages: 100},   // cut by count, 25.7 KB
		{MaxBytes: 65536, MaxMessages: 10000}, // cut by size
		{MaxBytes: 262144, MaxMessages: 10000},
		{MaxBytes: 10000, MaxMessages: 10000}, // 8192
		{MaxBytes: 4096, MaxMessages: 10000},
	} {
		b.Enabled, b.Compression = true, "none"
		p := &packer{hub: &sizeHub{}}
		var msgs []*queue.Message
		for i := range 3000 {
			msgs = append(msgs, reading(i, 256, map[string]string{"mqtt-topic": "plant/line3/press7", "line": "3"}))
		}
		batches := pack(p, b, msgs)
		billed, units := 0, 0
		for i, batch := range batches[:len(batches)-1] {
			m := message(batch, nil)
			n := edgehub.Billed(m)
			billed += n
			units += (n + 4095) / 4096
			if waste := (n+4095)/4096*4096 - n; waste >= 257 {
				t.Errorf("%+v: batch %d of %d readings meters %d bytes, wasting %d of its last unit", b, i, len(batch), n, waste)
			}
		}
		t.Logf("%+v: %d batches, %.4f of their units filled", b, len(batches), float64(billed)/float64(units*4096))
	}
}

// Readings of one batch share its properties: the topic's configured
// ones always (a route may read them), the MQTT topic only when every
// member came from the same one (else it would misname the others').
func TestPackerProperties(t *testing.T) {
	b := twin.Batching{Enabled: true, MaxBytes: 65536, MaxMessages: 1000, Compression: "none"}
	p := &packer{hub: &sizeHub{}}
	topic := deadletter.TopicProperty
	msgs := []*queue.Message{
		reading(0, 50, map[string]string{topic: "plant/a", "line": "3"}),
		reading(1, 50, map[string]string{topic: "plant/a", "line": "3"}),
		reading(2, 50, map[string]string{topic: "plant/a", "line": "4"}), // another line: another batch
		reading(3, 50, map[string]string{topic: "plant/b", "line": "4"}),
		reading(4, 50, map[string]string{topic: "plant/c", "line": "4"}),
	}
	batches := pack(p, b, msgs)
	if len(batches) != 2 || len(batches[0]) != 2 || len(batches[1]) != 3 {
		t.Fatalf("batches of %v, want [2 3]", lens(batches))
	}
	first, second := message(batches[0], nil), message(batches[1], nil)
	if first.Properties[topic] != "plant/a" || first.Properties["line"] != "3" || first.Properties["batch-count"] != "2" {
		t.Errorf("first batch properties %v, want the shared topic, line 3, count 2", first.Properties)
	}
	if _, ok := second.Properties[topic]; ok || second.Properties["line"] != "4" {
		t.Errorf("second batch properties %v, want line 4 and no topic (members differ)", second.Properties)
	}
}

func lens(batches [][]*queue.Message) []int {
	var n []int
	for _, b := range batches {
		n = append(n, len(b))
	}
	return n
}

// Members kept for the next batch when maxMessages cuts at a unit
// boundary wait batching.linger from when they came, not from when the
// batch they left began.
func TestPackerLingerOfKept(t *testing.T) {
	b := twin.Batching{Enabled: true, MaxBytes: 65536, MaxMessages: 20, Linger: twin.Duration(time.Second), Compression: "none"}
	p := &packer{hub: &sizeHub{}}
	t0 := time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC)
	var sent []*queue.Message
	for i := range 20 {
		for _, batch := range p.add(reading(i, 256, nil), b, t0.Add(time.Duration(i)*time.Millisecond)) {
			sent = append(sent, batch...)
		}
	}
	// 20 readings meter about 5.2 KB: the first unit's worth goes.
	if len(sent) == 0 || len(sent) == 20 {
		t.Fatalf("%d of 20 readings sent at maxMessages, want those filling the first 4 KB unit", len(sent))
	}
	d, ok := p.deadline(b)
	if want := t0.Add(time.Duration(len(sent))*time.Millisecond + time.Second); !ok || !d.Equal(want) {
		t.Errorf("deadline of the kept readings = %v, %v; want %v, from the first kept one's arrival", d, ok, want)
	}
}

func TestCompatible(t *testing.T) {
	m := func(out string, props map[string]string) *queue.Message {
		return &queue.Message{Output: out, Properties: props}
	}
	topic := deadletter.TopicProperty
	for _, tc := range []struct {
		a, b *queue.Message
		want bool
	}{
		{m("o", nil), m("o", map[string]string{}), true},
		{m("o", nil), m("p", nil), false},
		{m("o", map[string]string{topic: "a", "line": "3"}), m("o", map[string]string{topic: "b", "line": "3"}), true},
		{m("o", map[string]string{topic: "a"}), m("o", nil), true},
		{m("o", map[string]string{"line": "3"}), m("o", map[string]string{"line": "4"}), false},
		{m("o", map[string]string{"line": "3"}), m("o", map[string]string{"line": "3", "x": ""}), false},
		{m("o", map[string]string{"line": "3", "x": ""}), m("o", map[string]string{"line": "3", topic: "a"}), false},
	} {
		if got := compatible(tc.a, tc.b); got != tc.want {
			t.Errorf("compatible(%v, %v) = %v, want %v", tc.a.Properties, tc.b.Properties, got, tc.want)
		}
	}
}
