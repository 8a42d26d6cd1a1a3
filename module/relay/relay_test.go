package relay

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/edgetpm/edgetpm/internal/backoff"
	"github.com/edgetpm/edgetpm/internal/emulator/hubemu"
	"github.com/edgetpm/edgetpm/internal/sas"
	"github.com/edgetpm/edgetpm/internal/testharness/hubtest"
	"github.com/edgetpm/edgetpm/internal/testharness/until"
	"github.com/edgetpm/edgetpm/module/deadletter"
	"github.com/edgetpm/edgetpm/module/edgehub"
	"github.com/edgetpm/edgetpm/module/queue"
	"github.com/edgetpm/edgetpm/module/twin"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var key = []byte("relay-test-key-0123456789abcdef!")

// pipeline is a relay over a real queue in a temp folder, publishing
// through a real session to the edgeHub emulator.
type pipeline struct {
	dead  *deadletter.Store
	hub   *hubtest.Server
	q     *queue.Queue
	r     *Relay
	sess  *edgehub.Session
	close func()
}

func start(t testing.TB, c twin.Config) *pipeline { return startWith(t, c, Options{}) }

// startWith is start with more options (its dead-letter store always).
func startWith(t testing.TB, c twin.Config, opts Options) *pipeline {
	t.Helper()
	hub := hubtest.Start(t, hubemu.Config{
		Key:    hubtest.Keys(map[string][]byte{"edge1/relay": key}),
		Routes: map[string]string{"up": "FROM /messages/modules/relay/outputs/* INTO $upstream"},
	})
	q, err := queue.Open(queue.Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	dead, err := deadletter.Open(t.TempDir(), deadletter.Options{})
	if err != nil {
		t.Fatal(err)
	}
	p := &pipeline{hub: hub, q: q, dead: dead}
	p.sess, err = edgehub.New(edgehub.Config{
		Identity: edgehub.Identity{HubHostName: hub.HubHostName(), DeviceID: "edge1", ModuleID: "relay", Host: hub.GatewayHostName(), Address: hub.Addr},
		Signer:   sas.Key(key),
		RootCAs:  hub.Pool,
		Backoff:  backoff.Backoff{Base: 20 * time.Millisecond, Max: 200 * time.Millisecond},
		Input:    func(ctx context.Context, input string, m *edgehub.Message) error { return p.r.Input(ctx, input, m) },
	})
	if err != nil {
		t.Fatal(err)
	}
	c.InFlight = 4
	opts.DeadLetters = dead
	p.r = New(q, p.sess, c, opts)
	p.r.Metrics.SetConnected(p.sess.Connected)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{}, 2)
	go func() { p.sess.Run(ctx); done <- struct{}{} }()
	go func() { p.r.Run(ctx); done <- struct{}{} }()
	p.close = func() {
		cancel()
		<-done
		<-done
		q.Close()
	}
	t.Cleanup(p.close)
	return p
}

func config(mutate func(*twin.Config)) twin.Config {
	c := twin.Defaults()
	if mutate != nil {
		mutate(&c)
	}
	return c
}

// Messages from edgeHub inputs and from other intake go upstream with
// their IDs, in order per source, and leave the queue once acknowledged;
// a redelivered input is dropped as a duplicate.
func TestRelay(t *testing.T) {
	p := start(t, config(nil))
	ctx := t.Context()
	const perSource = 100
	for i := range perSource {
		for _, src := range []string{"a", "b", "c"} {
			m := &queue.Message{ID: fmt.Sprintf("%s-%03d", src, i), Source: "mqtt:" + src, Output: "telemetry", Body: []byte(fmt.Sprint(i))}
			if err := p.r.Append(ctx, m); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := p.hub.SendToInput(ctx, "edge1", "relay", "in", hubemu.Message{Body: []byte("x"), System: map[string]string{"$.mid": "input-1"}}); err != nil {
		t.Fatal(err)
	}
	up, err := p.hub.WaitUpstream(ctx, 3*perSource+1)
	if err != nil {
		t.Fatal(err)
	}
	next := map[string]int{}
	for _, m := range up {
		id := m.System["$.mid"]
		if id == "input-1" {
			if m.Properties["input"] != "in" {
				t.Errorf("input message properties = %v", m.Properties)
			}
			continue
		}
		src, n := id[:1], 0
		fmt.Sscanf(id[2:], "%d", &n)
		if n != next[src] {
			t.Fatalf("source %s: got %s after %d, want them in order", src, id, next[src]-1)
		}
		next[src]++
	}
	// A redelivery of the same input message is taken and dropped.
	if err := p.r.Input(ctx, "in", &edgehub.Message{ID: "input-1", Body: []byte("x")}); err != nil {
		t.Fatal(err)
	}
	until.True(t, "the queue to empty", func() bool { return p.q.Stats().Depth == 0 })
	metrics := scrape(t, p.r)
	for _, want := range []string{
		`edgerelay_duplicate_messages_total 1`,
		`edgerelay_acknowledged_messages_total 301`,
		`edgerelay_intake_messages_total{source="edgehub:in"} 1`,
		`edgerelay_intake_messages_total{source="mqtt:a"} 100`,
		`edgerelay_queue_depth_messages 0`,
		`edgerelay_connected 1`,
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("metrics have no %q:\n%s", want, metrics)
		}
	}
}

// Batching packs small JSON readings into one array message; Flush sends
// a partial batch at once; an expired message is dropped and counted.
func TestBatchingAndExpiry(t *testing.T) {
	p := start(t, config(func(c *twin.Config) {
		c.Batching = twin.Batching{Enabled: true, MaxBytes: 4096, MaxMessages: 10, Linger: twin.Duration(time.Hour)}
	}))
	ctx := t.Context()
	for i := range 25 {
		m := &queue.Message{ID: fmt.Sprint("r", i), Source: "mqtt:s", Output: "telemetry", Body: []byte(fmt.Sprintf(`{"i":%d}`, i))}
		if err := p.r.Append(ctx, m); err != nil {
			t.Fatal(err)
		}
	}
	up, err := p.hub.WaitUpstream(ctx, 2)
	if err != nil {
		t.Fatal(err)
	}
	var first []map[string]int
	if err := json.Unmarshal(up[0].Body, &first); err != nil || len(first) != 10 || first[0]["i"] != 0 || up[0].Properties["batch-count"] != "10" {
		t.Fatalf("first batch = %s (%v), props %v", up[0].Body, err, up[0].Properties)
	}
	// The last 5 wait for the linger (an hour) unless flushed.
	until.True(t, "two full batches", func() bool { return len(p.hub.Upstream()) == 2 })
	// Flush sends what has reached the publisher; repeat until the last
	// five, appended before, have.
	flushed := 0
	until.True(t, "the last five flushed", func() bool {
		n, err := p.r.Flush(ctx)
		if err != nil {
			t.Fatal(err)
		}
		flushed += n
		return flushed == 5
	})
	up, _ = p.hub.WaitUpstream(ctx, 3)
	if !strings.HasPrefix(string(up[2].Body), `[{"i":20}`) {
		t.Errorf("flushed batch = %s", up[2].Body)
	}

	stale := &queue.Message{ID: "stale", Source: "edgehub:x", Output: "telemetry", Body: []byte("old"), Expires: time.Now().Add(-time.Minute)}
	if err := p.r.Append(ctx, stale); err != nil {
		t.Fatal(err)
	}
	until.True(t, "the stale message to be dropped", func() bool {
		// Dropped by the queue when read, or by the publisher if it was
		// already on its way: counted once, by one of them.
		m := scrape(t, p.r)
		return strings.Contains(m, `edgerelay_dropped_messages_total{reason="expired"} 1`) != strings.Contains(m, `edgerelay_queue_dropped_messages_total{reason="expired"} 1`)
	})
	for _, m := range p.hub.Upstream() {
		if m.System["$.mid"] == "stale" {
			t.Error("an expired message was sent")
		}
	}
}

// Readiness follows the connection; liveness the publisher.
func TestHealth(t *testing.T) {
	p := start(t, config(nil))
	until.True(t, "connected", p.sess.Connected)
	srv := httptest.NewServer(p.r.Handler())
	defer srv.Close()
	get := func(path string) int {
		resp, err := srv.Client().Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if get("/healthz") != 200 || get("/readyz") != 200 {
		t.Fatalf("healthz %d, readyz %d; want 200 and 200", get("/healthz"), get("/readyz"))
	}
	p.hub.RefuseConnects(2 * time.Second)
	p.hub.DropAll()
	until.True(t, "not ready while disconnected", func() bool { return get("/readyz") == 503 })
	if get("/healthz") != 200 {
		t.Error("not live while disconnected")
	}
}

func scrape(t *testing.T, r *Relay) string {
	t.Helper()
	srv := httptest.NewServer(r.Handler())
	defer srv.Close()
	resp, err := srv.Client().Get(srv.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// edgeHub dropping every connection and refusing connects under load:
// the window is sent again after each reconnect and nothing is lost.
func TestHubDropsUnderLoad(t *testing.T) {
	p := start(t, config(nil))
	ctx := t.Context()
	const n = 3000
	go func() {
		for range 4 {
			time.Sleep(50 * time.Millisecond)
			p.hub.RefuseConnects(100 * time.Millisecond)
			p.hub.DropAll()
		}
	}()
	for i := range n {
		m := &queue.Message{ID: fmt.Sprintf("m%04d", i), Source: fmt.Sprint("mqtt:s", i%3), Output: "telemetry", Body: []byte("x")}
		if err := p.r.Append(ctx, m); err != nil {
			t.Fatal(err)
		}
	}
	until.True(t, "every message upstream", func() bool {
		seen := map[string]bool{}
		for _, m := range p.hub.Upstream() {
			seen[m.System["$.mid"]] = true
		}
		return len(seen) == n
	})
	until.True(t, "the queue to empty", func() bool { return p.q.Stats().Depth == 0 })
}
