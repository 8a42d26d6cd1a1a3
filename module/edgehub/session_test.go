package edgehub

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/edgetpm/edgetpm/internal/backoff"
	"github.com/edgetpm/edgetpm/internal/emulator/hubemu"
	"github.com/edgetpm/edgetpm/internal/sas"
	"github.com/edgetpm/edgetpm/internal/testharness/hubtest"
	"github.com/edgetpm/edgetpm/internal/testharness/syncbuf"
	"github.com/edgetpm/edgetpm/internal/testharness/until"
	"github.com/rs/zerolog"
)

var moduleKey = []byte("0123456789abcdef0123456789abcdef")

// bench is the hub emulator with a relay module and a sensor module, and a
// route from the sensor to the relay's input and from the relay to
// $upstream.
func bench(t testing.TB, cfg hubemu.Config) *hubtest.Server {
	t.Helper()
	cfg.Key = hubtest.Keys(map[string][]byte{"edge1/relay": moduleKey, "edge1/sensor": moduleKey})
	cfg.Routes = map[string]string{
		"sensorToRelay": `FROM /messages/modules/sensor/outputs/* INTO BrokeredEndpoint("/modules/relay/inputs/readings")`,
		"relayUp":       `FROM /messages/modules/relay/outputs/* INTO $upstream`,
	}
	return hubtest.Start(t, cfg)
}

// start runs a Session until the test ends, for the relay module unless
// cfg names another identity.
func start(t testing.TB, hub *hubtest.Server, cfg Config) *Session {
	t.Helper()
	if cfg.Identity.DeviceID == "" {
		cfg.Identity = Identity{HubHostName: hub.HubHostName(), DeviceID: "edge1", ModuleID: "relay", Host: hub.GatewayHostName(), Address: hub.Addr}
	}
	if cfg.Signer == nil {
		cfg.Signer = sas.Key(moduleKey)
	}
	cfg.RootCAs = hub.Pool
	if cfg.Backoff.Base == 0 {
		cfg.Backoff = backoff.Backoff{Base: 50 * time.Millisecond, Max: 500 * time.Millisecond}
	}
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return s
}

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// Send, receive on an input, twin, methods: the whole contract once.
func TestSession(t *testing.T) {
	hub := bench(t, hubemu.Config{})
	var inputs sync.Map
	var desired atomic.Value
	connected := make(chan struct{}, 10)
	s := start(t, hub, Config{
		Input: func(_ context.Context, input string, m *Message) error {
			inputs.Store(m.ID, input+" from "+m.From)
			return nil
		},
		Method: func(_ context.Context, name string, payload []byte) (int, []byte) {
			return 200, []byte(fmt.Sprintf(`{"method":%q,"got":%s}`, name, payload))
		},
		Desired:   func(_ context.Context, p []byte) { desired.Store(string(p)) },
		Connected: func(context.Context) { connected <- struct{}{} },
	})
	ctx := t.Context()
	<-connected

	m := &Message{Body: []byte(`{"t":21.5}`), ContentType: "application/json", ContentEncoding: "utf-8", Properties: map[string]string{"site": "plant 1"}}
	if err := s.Publish(ctx, "alerts", m); err != nil {
		t.Fatal(err)
	}
	up, err := hub.WaitUpstream(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	got := up[0]
	if string(got.Body) != `{"t":21.5}` || got.System["$.mid"] != m.ID || got.System["$.ct"] != "application/json" || got.Properties["site"] != "plant 1" || got.Output != "alerts" {
		t.Errorf("upstream = %+v", got)
	}

	// A sensor's message routed to our input.
	if err := hub.SendToInput(ctx, "edge1", "relay", "readings", hubemu.Message{Body: []byte("x"), System: map[string]string{"$.mid": "in-1", "$.cdid": "edge1", "$.cmid": "sensor"}}); err != nil {
		t.Fatal(err)
	}
	until.True(t, "the input message", func() bool { v, ok := inputs.Load("in-1"); return ok && v == "readings from edge1/sensor" })

	// Twin: report, read back, desired pushed.
	if err := s.ReportProperties(ctx, []byte(`{"state":"ok"}`)); err != nil {
		t.Fatal(err)
	}
	tw, err := s.GetTwin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var doc struct{ Reported map[string]any }
	json.Unmarshal(tw, &doc)
	if doc.Reported["state"] != "ok" {
		t.Errorf("twin after report = %s", tw)
	}
	if _, err := hub.UpdateDesired("edge1", "relay", json.RawMessage(`{"output":"x"}`)); err != nil {
		t.Fatal(err)
	}
	until.True(t, "the desired patch", func() bool { v, _ := desired.Load().(string); return v != "" })

	// A direct method.
	status, resp, err := hub.InvokeMethod(ctx, "edge1", "relay", "ping", json.RawMessage(`{"n":1}`), 5*time.Second)
	if err != nil || status != 200 || string(resp) != `{"method":"ping","got":{"n":1}}` {
		t.Errorf("InvokeMethod = %d %s %v", status, resp, err)
	}
}

// A stream while tokens live two seconds: the session renews by
// reconnecting and nothing is lost; the hub's re-authentication drops any
// connection whose token it would not accept.
func TestTokenRenewalLosesNothing(t *testing.T) {
	if testing.Short() {
		t.Skip("runs for several token lifetimes")
	}
	hub := bench(t, hubemu.Config{ReauthInterval: 200 * time.Millisecond})
	s := start(t, hub, Config{TokenTTL: 2 * time.Second})
	ctx := t.Context()
	const n = 300
	for i := range n {
		m := &Message{ID: fmt.Sprintf("m%03d", i), Body: []byte(fmt.Sprint(i))}
		if err := s.Publish(ctx, "out", m); err != nil {
			t.Fatal(err)
		}
		time.Sleep(20 * time.Millisecond) // about 6 s: three token lifetimes
	}
	if s.TokenRenewals() < 2 {
		t.Errorf("%d token renewals in 6 s of 2 s tokens, want at least 2", s.TokenRenewals())
	}
	seen := map[string]bool{}
	for _, m := range hub.Upstream() {
		seen[m.System["$.mid"]] = true
	}
	for i := range n {
		if id := fmt.Sprintf("m%03d", i); !seen[id] {
			t.Fatalf("message %s never arrived (%d distinct of %d)", id, len(seen), n)
		}
	}
}

// CONNACK 5 (a signer that signs wrong at first) is answered with a fresh
// token; a hub that drops every connection or refuses for a while is
// waited out; publishes made meanwhile get through.
func TestRecovery(t *testing.T) {
	hub := bench(t, hubemu.Config{})
	var bad atomic.Int32
	bad.Store(2)
	s := start(t, hub, Config{Signer: signerFunc(func(ctx context.Context, data []byte) ([]byte, error) {
		if bad.Add(-1) >= 0 {
			return sas.Key("wrong key").Sign(ctx, data)
		}
		return sas.Key(moduleKey).Sign(ctx, data)
	})})
	ctx := t.Context()
	if err := s.Publish(ctx, "out", &Message{ID: "after-5", Body: []byte("1")}); err != nil {
		t.Fatal(err)
	}
	hub.RefuseConnects(500 * time.Millisecond)
	hub.DropAll()
	if err := s.Publish(ctx, "out", &Message{ID: "after-drop", Body: []byte("2")}); err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, m := range hub.Upstream() {
		seen[m.System["$.mid"]] = true
	}
	if !seen["after-5"] || !seen["after-drop"] {
		t.Errorf("upstream has %v, want both messages", seen)
	}
}

// Connections are numbered: a publish meant for one that is gone is
// refused (ErrReconnected), so that it never overtakes, on the next
// connection, what must be sent again first.
func TestConnectionNumbers(t *testing.T) {
	hub := bench(t, hubemu.Config{})
	s := start(t, hub, Config{})
	ctx := t.Context()
	first, err := s.WaitConnected(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.SendOn(first, "out", &Message{ID: "on-first", Body: []byte("1")}); err != nil {
		t.Fatal(err)
	}
	hub.DropAll()
	second, err := s.WaitConnected(ctx, first)
	if err != nil {
		t.Fatal(err)
	}
	if second <= first {
		t.Fatalf("WaitConnected after %d = %d", first, second)
	}
	if _, err := s.SendOn(first, "out", &Message{ID: "stale", Body: []byte("2")}); !errors.Is(err, ErrReconnected) {
		t.Fatalf("SendOn a gone connection = %v, want ErrReconnected", err)
	}
	p, err := s.SendOn(second, "out", &Message{ID: "on-second", Body: []byte("3")})
	if err != nil {
		t.Fatal(err)
	}
	<-p.Done()
	if p.Err() != nil {
		t.Fatal(p.Err())
	}
	for _, m := range hub.Upstream() {
		if m.System["$.mid"] == "stale" {
			t.Error("a publish for a gone connection went out")
		}
	}
	// WaitConnected for a later connection waits, bounded by ctx.
	short, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel()
	if _, err := s.WaitConnected(short, second); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("WaitConnected after the current connection = %v, want the deadline", err)
	}
}

type signerFunc func(context.Context, []byte) ([]byte, error)

func (f signerFunc) Sign(ctx context.Context, data []byte) ([]byte, error) { return f(ctx, data) }

// BenchmarkPublish is one QoS 1 message to an output, acknowledged by the
// edgeHub emulator after it recorded it, over TLS on loopback.
func BenchmarkPublish(b *testing.B) {
	hub := bench(b, hubemu.Config{})
	s := start(b, hub, Config{})
	body := make([]byte, 256)
	b.SetBytes(int64(len(body)))
	i := 0
	for b.Loop() {
		i++
		if err := s.Publish(b.Context(), "out", &Message{ID: fmt.Sprint(i), Body: body}); err != nil {
			b.Fatal(err)
		}
	}
}

// A token the hub refuses is CONNACK 5, reported as ErrNotAuthorized: the
// session speaks MQTT 3.1.1 only, as IoT Hub does, and does not try again
// with MQTT 3.1 (which paho does by default after a refusal, turning the
// hub's "not authorized" into "unacceptable protocol version").
func TestRefusedTokenIsNotAuthorized(t *testing.T) {
	hub := bench(t, hubemu.Config{})
	var log syncbuf.Buffer
	start(t, hub, Config{
		Signer: sas.Key([]byte("another key, not the module's....")),
		Log:    zerolog.New(&log),
	})
	until.True(t, "a refused connection in the log", func() bool { return strings.Contains(log.String(), "edgehub connection") })
	if !strings.Contains(log.String(), ErrNotAuthorized.Error()) {
		t.Errorf("the refused connection is logged as\n%s\nwant %q", log.String(), ErrNotAuthorized)
	}
}

// Config.Refused runs after each refused token; its error ends Run, and
// nil keeps retrying.
func TestRefusedHookEndsRun(t *testing.T) {
	hub := bench(t, hubemu.Config{})
	stale := errors.New("identity changed")
	var calls atomic.Int32
	s, err := New(Config{
		Identity: Identity{HubHostName: hub.HubHostName(), DeviceID: "edge1", ModuleID: "relay", Host: hub.GatewayHostName(), Address: hub.Addr},
		Signer:   sas.Key([]byte("another key, not the module's....")),
		RootCAs:  hub.Pool,
		Backoff:  backoff.Backoff{Base: 10 * time.Millisecond, Max: 50 * time.Millisecond},
		Refused: func(context.Context) error {
			if calls.Add(1) < 3 {
				return nil
			}
			return stale
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	if err := s.Run(ctx); !errors.Is(err, stale) || calls.Load() != 3 {
		t.Errorf("Run = %v after %d calls of Refused, want its error after 3", err, calls.Load())
	}
}
