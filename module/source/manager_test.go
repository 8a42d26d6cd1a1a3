package source

import (
	"errors"
	"fmt"
	"maps"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"go.uber.org/goleak"

	"github.com/edgetpm/edgetpm/internal/testharness/mosquittotest"
	"github.com/edgetpm/edgetpm/internal/testharness/until"
	"github.com/edgetpm/edgetpm/module/twin"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func apply(t testing.TB, m *Manager, sources ...twin.Source) {
	t.Helper()
	if err := m.Apply(t.Context(), sources, ""); err != nil {
		t.Fatalf("Apply: %v", err)
	}
}

func connected(m *Manager, name string) func() bool {
	return func() bool { return m.Stats()[name].Connected }
}

func numbered(prefix string, from, to int) []string {
	var out []string
	for i := from; i < to; i++ {
		out = append(out, fmt.Sprintf("%s%d", prefix, i))
	}
	return out
}

var hexID = regexp.MustCompile(`^[0-9a-f]{32}$`)

// A producer's 500 QoS 1 messages all arrive, in order, mapped to the
// topic's output with its properties.
func TestRelayInOrder(t *testing.T) {
	b := mosquittotest.Start(t, mosquittotest.Options{})
	q := &memQueue{}
	m := newManager(t, q, nil, testLog(t))
	run(t, m)
	apply(t, m, twin.Source{Name: "line1", URL: b.URL, Topics: []twin.Topic{
		{Filter: "plant/line1/#", QoS: 1, Output: "line1", Properties: map[string]string{"site": "north", PropTopic: "configured"}},
		{Filter: "plant/+/status", QoS: 0},
	}})
	until.True(t, "connected", connected(m, "line1"))

	const n = 500
	var bodies []string
	for i := range n {
		bodies = append(bodies, fmt.Sprintf(`{"n":%d}`, i))
	}
	p := mosquittotest.NewProducer(t, b)
	p.Publish("plant/line1/temp", bodies...)
	p.Publish("plant/line2/status", "running")
	until.True(t, "all messages", func() bool { return len(q.messages()) == n+1 })

	if got := q.bodies("plant/line1/temp"); !slices.Equal(got, bodies) {
		t.Fatalf("bodies out of order or missing: got %d, first %q", len(got), got[:min(3, len(got))])
	}
	ids := map[string]bool{}
	for i, msg := range q.messages() {
		if !hexID.MatchString(msg.ID) || ids[msg.ID] {
			t.Errorf("message %d: ID %q, want 32 hex digits, unique", i, msg.ID)
		}
		ids[msg.ID] = true
		if msg.Source != "mqtt:line1" || msg.Enqueued.IsZero() {
			t.Errorf("message %d: Source %q, Enqueued %v; want mqtt:line1 and a time", i, msg.Source, msg.Enqueued)
		}
		// Mosquitto keeps order per QoS: the QoS 0 delivery may overtake
		// QoS 1 messages still waiting for the in-flight window.
		if msg.Properties[PropTopic] == "plant/line2/status" {
			if msg.Output != "telemetry" || msg.ContentType != "" || len(msg.Properties) != 1 || string(msg.Body) != "running" {
				t.Errorf("status message = output %q, content type %q, properties %v, body %q; want the default output, no content type, the topic only",
					msg.Output, msg.ContentType, msg.Properties, msg.Body)
			}
			continue
		}
		want := map[string]string{"site": "north", PropTopic: "plant/line1/temp"}
		if msg.Output != "line1" || msg.ContentType != "application/json" || msg.ContentEncoding != "utf-8" || !maps.Equal(msg.Properties, want) {
			t.Errorf("message %d: output %q, content %q/%q, properties %v; want line1, application/json/utf-8, %v",
				i, msg.Output, msg.ContentType, msg.ContentEncoding, msg.Properties, want)
		}
	}
	if got := q.bodies("plant/line2/status"); !slices.Equal(got, []string{"running"}) {
		t.Errorf("status bodies = %q, want running", got)
	}
	st := m.Stats()["line1"]
	if !st.Connected || st.Received != n+1 || st.Queued != n+1 || st.Backpressured != 0 || st.LastError != "" {
		t.Errorf("Stats = %+v, want connected, %d received and queued, no error", st, n+1)
	}
}

// While the queue refuses, nothing is acknowledged: the broker stops at
// its in-flight window, and sends everything again to the next run with
// the same client ID, which acknowledges once the queue takes them.
func TestAckOnlyAfterAppend(t *testing.T) {
	b := mosquittotest.Start(t, mosquittotest.Options{Extra: []string{"max_inflight_messages 10"}})
	src := twin.Source{Name: "press", URL: b.URL, Topics: []twin.Topic{{Filter: "press/#", QoS: 1}}}
	p := mosquittotest.NewProducer(t, b)
	bodies := numbered("cycle ", 0, 50)

	q1 := &memQueue{refuse: errFull}
	m1 := newManager(t, q1, nil, testLog(t))
	stop1 := run(t, m1)
	apply(t, m1, src)
	until.True(t, "connected", connected(m1, "press"))
	p.Publish("press/cycle", bodies...)
	until.True(t, "the window full and appends refused", func() bool {
		st := m1.Stats()["press"]
		return st.Received == 10 && st.Backpressured >= 3
	})
	time.Sleep(200 * time.Millisecond) // the broker sends nothing more while we hold the PUBACKs
	if st := m1.Stats()["press"]; st.Received != 10 || st.Queued != 0 || !strings.Contains(st.LastError, "full") {
		t.Errorf("while refused: Stats = %+v, want 10 received (the window), none queued, a full queue as the error", st)
	}
	if err := stop1(); err != nil {
		t.Fatal(err)
	}
	if len(q1.messages()) != 0 {
		t.Fatalf("the refusing queue holds %d messages", len(q1.messages()))
	}

	// The next run: the queue fails (not full) for a while, then takes them.
	q2 := &memQueue{refuse: errors.New("write: no space left on device")}
	m2 := newManager(t, q2, nil, testLog(t))
	stop2 := run(t, m2)
	apply(t, m2, src)
	until.True(t, "the disk error seen", func() bool {
		return strings.Contains(m2.Stats()["press"].LastError, "no space left")
	})
	if st := m2.Stats()["press"]; st.Backpressured != 0 {
		t.Errorf("a disk error counted as backpressure: %+v", st)
	}
	q2.setRefuse(nil)
	until.True(t, "all 50 redelivered", func() bool { return len(q2.messages()) >= len(bodies) })
	if got := q2.bodies("press/cycle"); !slices.Equal(got, bodies) {
		t.Fatalf("after the restart the queue took %q, want %q", got, bodies)
	}
	if err := stop2(); err != nil {
		t.Fatal(err)
	}

	// Every one of them was acknowledged: a third run gets only what is new.
	q3 := &memQueue{}
	m3 := newManager(t, q3, nil, testLog(t))
	run(t, m3)
	apply(t, m3, src)
	until.True(t, "connected", connected(m3, "press"))
	p.Publish("press/cycle", "new")
	until.True(t, "the new message", func() bool { return len(q3.messages()) > 0 })
	time.Sleep(100 * time.Millisecond)
	if got := q3.bodies("press/cycle"); !slices.Equal(got, []string{"new"}) {
		t.Errorf("third run took %q, want only the new message", got)
	}
}

// Apply changes filters, removes and adds sources while Run runs.
func TestApplyLive(t *testing.T) {
	a, bb := mosquittotest.Start(t, mosquittotest.Options{}), mosquittotest.Start(t, mosquittotest.Options{})
	pa, pb := mosquittotest.NewProducer(t, a), mosquittotest.NewProducer(t, bb)
	q := &memQueue{}
	m := newManager(t, q, nil, testLog(t))
	run(t, m)
	base := runtime.NumGoroutine()

	s1 := twin.Source{Name: "s1", URL: a.URL, Topics: []twin.Topic{{Filter: "a/1", QoS: 1}}}
	apply(t, m, s1)
	if !m.Stats()["s1"].Connected {
		t.Fatalf("Apply returned before s1 connected: %+v", m.Stats())
	}
	pa.Publish("a/1", "one")
	until.True(t, "a/1", func() bool { return len(q.bodies("a/1")) == 1 })

	s1.Topics = []twin.Topic{{Filter: "a/2", QoS: 1}}
	apply(t, m, s1)
	pa.Publish("a/1", "stale")
	pa.Publish("a/2", "two")
	until.True(t, "a/2", func() bool { return len(q.bodies("a/2")) == 1 })
	if got := q.bodies("a/1"); !slices.Equal(got, []string{"one"}) {
		t.Errorf("after the filter changed, a/1 gave %q, want only the message from before", got)
	}
	if st := m.Stats()["s1"]; st.Received != 1 {
		t.Errorf("after the filter changed: Stats = %+v, want 1 received (a/1 unsubscribed, not delivered and dropped)", st)
	}

	apply(t, m)
	if st := m.Stats(); len(st) != 0 {
		t.Errorf("Stats after removing every source = %v, want none", st)
	}
	until.True(t, "goroutines back to the baseline", func() bool { return runtime.NumGoroutine() <= base })
	pa.Publish("a/2", "while removed")

	// Its session ended with it: added again, it gets nothing from the
	// time it was away.
	apply(t, m, s1)
	pa.Publish("a/2", "back")
	until.True(t, "a/2 again", func() bool { return len(q.bodies("a/2")) == 2 })
	if got := q.bodies("a/2"); !slices.Equal(got, []string{"two", "back"}) {
		t.Errorf("a/2 gave %q, want two, back", got)
	}

	// A second source on another broker; s1, unchanged, keeps running.
	s2 := twin.Source{Name: "s2", URL: bb.URL, Topics: []twin.Topic{{Filter: "b/#", QoS: 1, Output: "bee"}}}
	apply(t, m, s1, s2)
	pb.Publish("b/x", "bee")
	until.True(t, "b/x", func() bool { return len(q.bodies("b/x")) == 1 })
	got := q.messages()[len(q.messages())-1]
	if got.Source != "mqtt:s2" || got.Output != "bee" {
		t.Errorf("from s2: Source %q, Output %q; want mqtt:s2, bee", got.Source, got.Output)
	}
	if st := m.Stats(); len(st) != 2 || st["s1"].Received != 1 || !st["s2"].Connected {
		t.Errorf("Stats = %+v, want s1 not restarted (1 received) and s2 connected", st)
	}
}

// A wrong password is retried, with the error in Stats, until the
// environment holds the right one. No password reaches the log.
func TestCredentials(t *testing.T) {
	b := mosquittotest.Start(t, mosquittotest.Options{Users: map[string]string{"relay": "s3cret-pw", "producer": "prod-pw"}, TLS: true})
	e := newEnv(map[string]string{})
	e.set("RELAY_PASSWORD", "wrong-pw")
	var logs syncBuffer
	q := &memQueue{}
	m := newManager(t, q, e.get, zerolog.New(&logs).Level(zerolog.DebugLevel))
	run(t, m)
	topics := []twin.Topic{{Filter: "gw/#", QoS: 1}}
	apply(t, m,
		twin.Source{Name: "gw", URL: b.URL, CAFile: b.CAFile, Username: "relay", PasswordEnv: "RELAY_PASSWORD", Topics: topics},
		twin.Source{Name: "unset", URL: b.URL, CAFile: b.CAFile, Username: "relay", PasswordEnv: "NO_SUCH_VARIABLE", Topics: topics},
	)
	st := m.Stats()
	if st["gw"].Connected || !strings.Contains(st["gw"].LastError, "connect") {
		t.Errorf("with a wrong password: Stats = %+v, want not connected and a connect error", st["gw"])
	}
	if !strings.Contains(st["unset"].LastError, "NO_SUCH_VARIABLE is not set") {
		t.Errorf("without the variable: LastError = %q, want it named", st["unset"].LastError)
	}

	e.set("RELAY_PASSWORD", "s3cret-pw")
	until.True(t, "connected with the right password", connected(m, "gw"))
	mosquittotest.NewProducer(t, b).Publish("gw/1", "hello")
	until.True(t, "the message", func() bool { return len(q.bodies("gw/1")) == 1 })

	out := logs.String()
	for _, secret := range []string{"s3cret-pw", "wrong-pw"} {
		if strings.Contains(out, secret) {
			t.Errorf("the log holds a password:\n%s", out)
		}
	}
	if !strings.Contains(out, "source connection") {
		t.Errorf("the failed attempts were not logged:\n%s", out)
	}
}

// A broker that restarts (losing its sessions: no persistence) is
// reconnected to and subscribed again.
func TestBrokerRestart(t *testing.T) {
	b := mosquittotest.Start(t, mosquittotest.Options{})
	q := &memQueue{}
	m := newManager(t, q, nil, testLog(t))
	run(t, m)
	apply(t, m, twin.Source{Name: "r", URL: b.URL, Topics: []twin.Topic{{Filter: "r/#", QoS: 1}}})
	mosquittotest.NewProducer(t, b).Publish("r/1", "before")
	until.True(t, "before", func() bool { return len(q.bodies("r/1")) == 1 })

	b.Restart()
	until.True(t, "the loss seen", func() bool { return m.Stats()["r"].LastError != "" })
	until.True(t, "reconnected", connected(m, "r"))
	mosquittotest.NewProducer(t, b).Publish("r/1", "after")
	until.True(t, "after", func() bool { return len(q.bodies("r/1")) == 2 })
	if got := q.bodies("r/1"); !slices.Equal(got, []string{"before", "after"}) {
		t.Errorf("bodies = %q", got)
	}
}

// mqtts:// trusts the source's CA file; without it the system's roots do
// not know the broker. Sources applied before Run start with it.
func TestTLS(t *testing.T) {
	b := mosquittotest.Start(t, mosquittotest.Options{TLS: true})
	q := &memQueue{}
	m := newManager(t, q, nil, testLog(t))
	topics := []twin.Topic{{Filter: "tls/#", QoS: 1}}
	apply(t, m,
		twin.Source{Name: "trusted", URL: b.URL, CAFile: b.CAFile, Topics: topics},
		twin.Source{Name: "untrusted", URL: b.URL, Topics: topics},
	)
	if st := m.Stats(); len(st) != 0 {
		t.Fatalf("sources running before Run: %v", st)
	}
	run(t, m)
	until.True(t, "connected over TLS", connected(m, "trusted"))
	until.True(t, "the untrusted failure", func() bool { return m.Stats()["untrusted"].LastError != "" })
	if st := m.Stats()["untrusted"]; st.Connected || !strings.Contains(st.LastError, "certificate") {
		t.Errorf("without the CA: Stats = %+v, want a certificate error", st)
	}
	mosquittotest.NewProducer(t, b).Publish("tls/1", "secret reading")
	until.True(t, "the message", func() bool { return len(q.bodies("tls/1")) == 1 })
}

// Apply refuses a configuration no retry can fix, and changes nothing.
func TestApplyRefuses(t *testing.T) {
	m := newManager(t, &memQueue{}, nil, zerolog.Nop())
	ok := twin.Source{Name: "ok", URL: "tcp://127.0.0.1:1", Topics: []twin.Topic{{Filter: "#"}}}
	for _, tt := range []struct {
		name string
		src  twin.Source
		want string
	}{
		{"scheme", twin.Source{Name: "x", URL: "ws://h", Topics: ok.Topics}, "want tcp://"},
		{"credentials in URL", twin.Source{Name: "x", URL: "mqtt://u:p@h", Topics: ok.Topics}, "credentials"},
		{"no topics", twin.Source{Name: "x", URL: "mqtt://h"}, "no topics"},
		{"qos 2", twin.Source{Name: "x", URL: "mqtt://h", Topics: []twin.Topic{{Filter: "a", QoS: 2}}}, "QoS 0 or 1"},
		{"duplicate name", ok, "unique name"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			err := m.Apply(t.Context(), []twin.Source{ok, tt.src}, "")
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Apply(%+v) = %v, want an error with %q", tt.src, err, tt.want)
			}
			if m.desired != nil {
				t.Errorf("a refused Apply recorded %v", m.desired)
			}
		})
	}
}

// A message queued whose PUBACK never reached the broker comes again with
// DUP set; it is acknowledged and dropped, not queued a second time under
// a new $.mid: in the same process after a dropped connection, and in the
// next one after a restart (from the state folder).
func TestRedeliveryNotQueuedTwice(t *testing.T) {
	for _, restart := range []bool{false, true} {
		t.Run(map[bool]string{false: "reconnect", true: "restart"}[restart], func(t *testing.T) {
			b := mosquittotest.Start(t, mosquittotest.Options{})
			px := mosquittotest.NewProxy(t, b)
			state := t.TempDir()
			q := &memQueue{}
			var once sync.Once
			cut := make(chan struct{})
			// The first append lands; its acknowledgements do not.
			q.onAppend = func() { once.Do(func() { px.Cut(restart); close(cut) }) }
			start := func() (*Manager, func() error) {
				m := newManager(t, q, nil, testLog(t))
				m.stateDir = state
				if err := m.Apply(t.Context(), []twin.Source{{Name: "plc", URL: px.URL, Topics: []twin.Topic{{Filter: "r/#", QoS: 1}}}}, ""); err != nil {
					t.Fatal(err)
				}
				return m, run(t, m)
			}
			m, stop := start()
			until.True(t, "connected", func() bool { return m.Stats()["plc"].Connected })
			want := []string{"a", "b", "c", "d", "e"}
			mosquittotest.NewProducer(t, b).Publish("r/1", want...)
			<-cut
			if restart {
				if err := stop(); err != nil {
					t.Fatal(err)
				}
				px.Restore()
				m, _ = start()
			}
			until.True(t, "every message queued", func() bool { return len(q.bodies("r/1")) >= len(want) })
			time.Sleep(300 * time.Millisecond) // a second copy would come by now
			if got := q.bodies("r/1"); !slices.Equal(got, want) {
				t.Errorf("queued %q, want %q once each", got, want)
			}
			if m.Stats()["plc"].Duplicates == 0 {
				t.Error("no redelivery counted: the test did not cut between append and acknowledgement")
			}
		})
	}
}
