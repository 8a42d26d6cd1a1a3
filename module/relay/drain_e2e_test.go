package relay

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/edgetpm/edgetpm/internal/emulator/hubemu"
	"github.com/edgetpm/edgetpm/internal/testharness/until"
	"github.com/edgetpm/edgetpm/module/edgehub"
	"github.com/edgetpm/edgetpm/module/queue"
	"github.com/edgetpm/edgetpm/module/twin"
)

// Through the edgeHub emulator: during a real outage (connections
// dropped, then refused) routine readings queue up; an alarm queued after
// them is the first message edgeHub receives once it takes connections
// again, and the readings follow in order per source.
func TestAlarmFirstAfterOutage(t *testing.T) {
	p := startWith(t, config(nil), Options{Open: lanes(t, t.TempDir())})
	ctx := t.Context()
	until.True(t, "connected", p.sess.Connected)
	p.hub.RefuseConnects(time.Minute) // until the backlog is queued
	p.hub.DropAll()
	until.True(t, "disconnected", func() bool { return !p.sess.Connected() })

	const routine = 3000
	for i := 0; i < routine; i += 100 {
		var batch []*queue.Message
		for j := i; j < i+100; j++ {
			batch = append(batch, &queue.Message{ID: fmt.Sprintf("r-%d-%05d", j%5, j), Source: fmt.Sprint("mqtt:line", j%5), Output: "telemetry", Body: []byte(`{"t":20.5}`)})
		}
		if err := p.r.Append(ctx, batch...); err != nil {
			t.Fatal(err)
		}
	}
	alarm := &queue.Message{ID: "alarm", Source: "mqtt:line3", Output: "alarms", Rank: twin.RankOf(new(0)), Body: []byte(`{"overheat":true}`)}
	if err := p.r.Append(ctx, alarm); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond) // the outage goes on a little
	if n := len(p.hub.Upstream()); n != 0 {
		t.Fatalf("%d upstream during the outage", n)
	}
	p.hub.RefuseConnects(0)
	up, err := p.hub.WaitUpstream(ctx, routine+1)
	if err != nil {
		t.Fatal(err)
	}
	if id := up[0].System["$.mid"]; id != "alarm" {
		t.Errorf("first upstream after the outage: %s, want the alarm", id)
	}
	last := map[string]string{}
	for _, m := range up {
		id := m.System["$.mid"]
		src, _, _ := strings.Cut(strings.TrimPrefix(id, "r-"), "-")
		if id != "alarm" && last[src] >= id {
			t.Fatalf("line%s: %s after %s", src, id, last[src])
		}
		last[src] = id
	}
	until.True(t, "queues empty", func() bool { return p.r.QueueStats().Depth == 0 })
}

// Through the edgeHub emulator, with upstream.maxBytesPerSecond set, what
// edgeHub receives over four seconds stays within 5 % of the cap, each
// message counted as the session counts it.
func TestUpstreamCapAtHub(t *testing.T) {
	const capacity = 16000
	p := start(t, config(func(c *twin.Config) { c.Upstream.MaxBytesPerSecond = capacity }))
	ctx := t.Context()
	for i := range 600 { // about 40 s at the cap
		m := &queue.Message{ID: fmt.Sprintf("m-%04d", i), Source: fmt.Sprint("mqtt:s", i%8), Output: "telemetry", Body: []byte(strings.Repeat("x", 900))}
		if err := p.r.Append(ctx, m); err != nil {
			t.Fatal(err)
		}
	}
	var up []hubemu.Message
	until.Within(t, 15*time.Second, "4.5 s of upstream", func() bool {
		up = p.hub.Upstream()
		return len(up) > 2 && up[len(up)-1].Received.Sub(up[0].Received) >= 4500*time.Millisecond
	})
	// From half a second in, after the first burst.
	from := slices.IndexFunc(up, func(m hubemu.Message) bool { return m.Received.Sub(up[0].Received) >= 500*time.Millisecond })
	var n int
	for _, m := range up[from+1:] {
		n += p.sess.Size(m.Output, &edgehub.Message{ID: m.System["$.mid"], ContentType: m.System["$.ct"], ContentEncoding: m.System["$.ce"], Properties: m.Properties, Body: m.Body})
	}
	got := float64(n) / up[len(up)-1].Received.Sub(up[from].Received).Seconds()
	t.Logf("%d messages, %.0f B/s under a cap of %d", len(up)-from-1, got, capacity)
	if got < capacity*0.95 || got > capacity*1.05 {
		t.Errorf("upstream %.0f B/s under a cap of %d B/s, want within 5 %%", got, capacity)
	}
}
