package relay

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/edgetpm/edgetpm/module/edgehub"
	"github.com/edgetpm/edgetpm/module/queue"
	"github.com/edgetpm/edgetpm/module/twin"
)

// outageHub is a hub that refuses connections until up is closed, then
// acknowledges every publish at once, recording what was sent when.
type outageHub struct {
	up   chan struct{}
	mu   sync.Mutex
	sent []sent
}

type sent struct {
	id   string
	at   time.Time
	size int
}

func (h *outageHub) WaitConnected(ctx context.Context, after uint64) (uint64, error) {
	if after >= 1 {
		<-ctx.Done() // one connection only
		return 0, ctx.Err()
	}
	select {
	case <-h.up:
		return 1, nil
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}

func (h *outageHub) SendOn(gen uint64, output string, m *edgehub.Message) (edgehub.Pending, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.sent = append(h.sent, sent{m.ID, time.Now(), h.Size(output, m)})
	return edgehub.Settled(nil), nil
}

func (h *outageHub) Size(_ string, m *edgehub.Message) int { return 100 + len(m.Body) }
func (h *outageHub) Fits(o string, m *edgehub.Message) bool {
	return h.Size(o, m) <= edgehub.MaxMessageSize
}

func (h *outageHub) ids() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make([]string, len(h.sent))
	for i, s := range h.sent {
		out[i] = s.id
	}
	return out
}

// runLanes runs a Relay over a queue per rank in a temporary folder,
// publishing to h with configuration c, and returns it with its rank 0
// queue and the ctx it runs on; stop ends it, failing the test on an
// error.
func runLanes(t *testing.T, h hub, c twin.Config) (r *Relay, q *queue.Queue, ctx context.Context, stop func()) {
	open := lanes(t, t.TempDir())
	q, err := open(0)
	if err != nil {
		t.Fatal(err)
	}
	r = New(q, h, c, Options{Open: open})
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	return r, q, ctx, func() {
		cancel()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
}

// lanes opens a queue per rank in dir, closing them when the test ends.
func lanes(t *testing.T, dir string) func(rank uint8) (*queue.Queue, error) {
	return func(rank uint8) (*queue.Queue, error) {
		q, err := queue.Open(queue.Options{Dir: filepath.Join(dir, fmt.Sprint("rank-", rank))})
		if err == nil {
			t.Cleanup(func() { q.Close() })
		}
		return q, err
	}
}

// After a 60-second outage during which routine readings queued up, an
// alarm published after them goes upstream first; the routine readings
// follow in their order, and each source's alarms in theirs.
func TestAlarmOvertakesBacklog(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := &outageHub{up: make(chan struct{})}
		r, q, ctx, stop := runLanes(t, h, twin.Defaults())

		var want []string
		for i := range 600 { // one reading of each of three sources every 300 ms
			src := fmt.Sprint("mqtt:line", i%3)
			id := fmt.Sprintf("routine-%04d", i)
			if err := r.Append(ctx, &queue.Message{ID: id, Source: src, Output: "telemetry", Body: []byte("20.5")}); err != nil {
				t.Fatal(err)
			}
			want = append(want, id)
			time.Sleep(100 * time.Millisecond)
		}
		alarms := []string{"alarm-1", "alarm-2"}
		for _, id := range alarms {
			if err := r.Append(ctx, &queue.Message{ID: id, Source: "mqtt:line0", Output: "alarms", Rank: twin.Ranks - 1, Body: []byte("overheat")}); err != nil {
				t.Fatal(err)
			}
		}
		synctest.Wait()
		if got := h.ids(); len(got) != 0 {
			t.Fatalf("sent %d during the outage", len(got))
		}
		close(h.up)
		for len(h.ids()) < len(want)+len(alarms) {
			time.Sleep(10 * time.Millisecond)
		}
		got := h.ids()
		if !slices.Equal(got[:2], alarms) {
			t.Errorf("first sent after the outage: %v, want the alarms %v", got[:min(5, len(got))], alarms)
		}
		routine := slices.DeleteFunc(slices.Clone(got), func(id string) bool { return !slices.Contains(want, id) })
		// Each source in order; sources are independent of each other.
		for src := range 3 {
			var g, w []string
			for i, id := range want {
				if i%3 == src {
					w = append(w, id)
				}
			}
			for _, id := range routine {
				var n int
				fmt.Sscanf(id, "routine-%d", &n)
				if n%3 == src {
					g = append(g, id)
				}
			}
			if !slices.Equal(g, w) {
				t.Errorf("source line%d: sent %d in another order or with gaps", src, len(g))
			}
		}
		synctest.Wait()
		if st := q.Stats(); st.Depth != 0 {
			t.Errorf("routine queue depth %d after the drain, want 0", st.Depth)
		}
		stop()
	})
}

// byteRate is the bytes per second of what was sent from index from on, over
// the time from the send before it to the last.
func byteRate(s []sent, from int) float64 {
	var n int
	for _, x := range s[from:] {
		n += x.size
	}
	return float64(n) / s[len(s)-1].at.Sub(s[from-1].at).Seconds()
}

// upstream.maxBytesPerSecond holds what goes upstream to the cap, as the
// session's Size counts it, over all workers; a new cap applies at once.
func TestUpstreamCap(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := &outageHub{up: make(chan struct{})}
		close(h.up)
		c := config(func(c *twin.Config) { c.Upstream.MaxBytesPerSecond = 20000 })
		r, _, ctx, stop := runLanes(t, h, c)
		for i := range 2000 { // 500 bytes each as Size counts it: 50 s at the cap
			m := &queue.Message{ID: fmt.Sprint(i), Source: fmt.Sprint("mqtt:s", i%8), Output: "telemetry", Body: make([]byte, 400)}
			if err := r.Append(ctx, m); err != nil {
				t.Fatal(err)
			}
		}
		time.Sleep(10 * time.Second)
		h.mu.Lock()
		first := slices.Clone(h.sent)
		h.mu.Unlock()
		if len(first) < 100 {
			t.Fatalf("%d sent in 10 s", len(first))
		}
		if got := byteRate(first, 10); got < 19000 || got > 21000 {
			t.Errorf("upstream rate %.0f B/s under a cap of 20000, want within 5 %%", got)
		}
		c.Upstream.MaxBytesPerSecond = 5000
		r.SetConfig(c)
		time.Sleep(10 * time.Second)
		h.mu.Lock()
		second := slices.Clone(h.sent[len(first):])
		h.mu.Unlock()
		if len(second) < 20 {
			t.Fatalf("%d sent in the 10 s after the cap changed", len(second))
		}
		if got := byteRate(second, 10); got < 4750 || got > 5250 {
			t.Errorf("upstream rate %.0f B/s after the cap became 5000, want within 5 %%", got)
		}
		stop()
	})
}

// slowHub is connected and takes 10 ms to put each publish on the wire:
// a slow link.
type slowHub struct{ outageHub }

func (h *slowHub) SendOn(gen uint64, output string, m *edgehub.Message) (edgehub.Pending, error) {
	time.Sleep(10 * time.Millisecond)
	return h.outageHub.SendOn(gen, output, m)
}

// While a backlog drains over a slow link, an alarm goes out after at
// most the publishes already under way, not after the backlog.
func TestAlarmOvertakesDrain(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := &slowHub{outageHub{up: make(chan struct{})}}
		close(h.up)
		r, _, ctx, stop := runLanes(t, h, twin.Defaults())
		var backlog []*queue.Message
		for i := range 4000 {
			backlog = append(backlog, &queue.Message{ID: fmt.Sprint(i), Source: fmt.Sprint("mqtt:s", i%8), Output: "telemetry", Body: []byte("1")})
		}
		if err := r.Append(ctx, backlog...); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Second + 5*time.Millisecond) // half-way through a publish
		before := len(h.ids())
		if err := r.Append(ctx, &queue.Message{ID: "alarm", Source: "mqtt:s3", Output: "alarms", Rank: twin.Ranks - 1, Body: []byte("!")}); err != nil {
			t.Fatal(err)
		}
		for !slices.Contains(h.ids(), "alarm") {
			time.Sleep(time.Millisecond)
		}
		if after := slices.Index(h.ids(), "alarm") - before; after > numWorkers {
			t.Errorf("the alarm went out after %d more of the backlog (%d were sent before it was queued), want at most %d under way", after, before, numWorkers)
		}
		stop()
	})
}

// A message older than its priority's upstream.timeToLiveSecs when it
// would be sent is dropped and counted (reason "ttl"); a priority without
// one keeps its messages.
func TestPriorityTTL(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := &outageHub{up: make(chan struct{})}
		c := config(func(c *twin.Config) { c.Upstream.TimeToLiveSecs = map[string]int64{"default": 30} })
		r, _, ctx, stop := runLanes(t, h, c)
		for i := range 60 { // one a second through a 60-second outage
			if err := r.Append(ctx, &queue.Message{ID: fmt.Sprint("r", i), Source: "mqtt:s", Output: "telemetry", Body: []byte("1")}); err != nil {
				t.Fatal(err)
			}
			if i == 0 {
				if err := r.Append(ctx, &queue.Message{ID: "alarm", Source: "mqtt:s", Output: "alarms", Rank: twin.Ranks - 1, Body: []byte("!")}); err != nil {
					t.Fatal(err)
				}
			}
			time.Sleep(time.Second)
		}
		close(h.up)
		synctest.Wait()
		time.Sleep(time.Second)
		synctest.Wait()
		got := h.ids()
		want := []string{"alarm"}
		for i := 30; i < 60; i++ { // enqueued at most 30 s before the outage ended
			want = append(want, fmt.Sprint("r", i))
		}
		if !slices.Equal(got, want) {
			t.Errorf("sent %v, want %v", got, want)
		}
		if n := dropped(t, r, "ttl"); n != 30 {
			t.Errorf("dropped for ttl: %v, want 30", n)
		}
		if st := r.QueueStats(); st.Depth != 0 {
			t.Errorf("queued after the drain: %d", st.Depth)
		}
		stop()
	})
}

// All priorities' queues together stay within queue.maxBytes: under
// backpressure a full total refuses routine readings, while an alarm
// still has its 1 MiB.
func TestPrioritiesShareQueueBound(t *testing.T) {
	open := lanes(t, t.TempDir())
	q, err := open(0)
	if err != nil {
		t.Fatal(err)
	}
	const total = 4 << 20
	c := config(func(c *twin.Config) { c.Queue.MaxBytes = total })
	now := time.Now()
	r := New(q, &outageHub{}, c, Options{Open: open, Now: func() time.Time { now = now.Add(time.Second); return now }})
	ctx := t.Context()
	body := make([]byte, 16<<10)
	for i := range 20 { // 320 KiB of alarms first
		if err := r.Append(ctx, &queue.Message{ID: fmt.Sprint("a", i), Source: "mqtt:s", Rank: twin.Ranks - 1, Body: body}); err != nil {
			t.Fatal(err)
		}
	}
	var full error
	for i := 0; i < 1000 && full == nil; i++ {
		full = r.Append(ctx, &queue.Message{ID: fmt.Sprint("r", i), Source: "mqtt:s", Body: body})
	}
	if !errors.Is(full, queue.ErrFull) {
		t.Fatalf("routine readings: %v, want queue.ErrFull", full)
	}
	if b := r.QueueStats().Bytes; b > total {
		t.Errorf("routine readings filled %d bytes in all, over queue.maxBytes %d", b, total)
	}
	if err := r.Append(ctx, &queue.Message{ID: "late-alarm", Source: "mqtt:s", Rank: twin.Ranks - 1, Body: body}); err != nil {
		t.Errorf("an alarm with the routine queue full: %v", err)
	}
	if b := r.QueueStats().Bytes; b > total+minLaneBytes {
		t.Errorf("%d bytes in all, over queue.maxBytes %d and an alarm's 1 MiB", b, total)
	}
}

// dropped is edgerelay_dropped_messages_total{reason}.
func dropped(t *testing.T, r *Relay, reason string) float64 {
	t.Helper()
	mfs, err := r.Metrics.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "edgerelay_dropped_messages_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "reason" && l.GetValue() == reason {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}
