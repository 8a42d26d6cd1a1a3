package twin_test

import (
	"context"
	"encoding/json"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/edgetpm/edgetpm/internal/backoff"
	"github.com/edgetpm/edgetpm/internal/emulator/hubemu"
	"github.com/edgetpm/edgetpm/internal/sas"
	"github.com/edgetpm/edgetpm/internal/testharness/hubtest"
	"github.com/edgetpm/edgetpm/internal/testharness/until"
	"github.com/edgetpm/edgetpm/module/edgehub"
	"github.com/edgetpm/edgetpm/module/twin"
)

var moduleKey = []byte("0123456789abcdef0123456789abcdef")

// relay is a module's twin as the relay keeps it: its session to the hub
// emulator and its reconciler.
type relay struct {
	hub *hubtest.Server
	rec *twin.Reconciler

	mu      sync.Mutex
	applied []twin.Config
}

func (r *relay) last() twin.Config {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.applied) == 0 {
		return twin.Config{}
	}
	return r.applied[len(r.applied)-1]
}

// reported is the configuration the hub holds as reported.
func (r *relay) reported(t *testing.T) twin.Reported {
	t.Helper()
	tw, err := r.hub.Twin("edge1", "relay")
	if err != nil {
		t.Fatal(err)
	}
	var p twin.ReportedProperties
	json.Unmarshal(tw.Reported, &p)
	if p.Configuration == nil {
		return twin.Reported{}
	}
	return *p.Configuration
}

// startRelay connects the relay's twin once the hub is set up.
func startRelay(t *testing.T, hub *hubtest.Server) *relay {
	t.Helper()
	r := &relay{hub: hub}
	var sess *edgehub.Session
	r.rec = &twin.Reconciler{
		Get:    func(ctx context.Context) ([]byte, error) { return sess.GetTwin(ctx) },
		Report: func(ctx context.Context, p []byte) error { return sess.ReportProperties(ctx, p) },
		Apply: func(_ context.Context, c twin.Config) error {
			r.mu.Lock()
			defer r.mu.Unlock()
			r.applied = append(r.applied, c)
			return nil
		},
		Retry: backoff.Backoff{Base: 50 * time.Millisecond, Max: 200 * time.Millisecond},
		Log:   zerolog.New(zerolog.NewTestWriter(t)),
	}
	if _, err := r.rec.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	var err error
	sess, err = edgehub.New(edgehub.Config{
		Identity:    edgehub.Identity{HubHostName: hub.HubHostName(), DeviceID: "edge1", ModuleID: "relay", Host: hub.GatewayHostName(), Address: hub.Addr},
		Signer:      sas.Key(moduleKey),
		RootCAs:     hub.Pool,
		Backoff:     backoff.Backoff{Base: 50 * time.Millisecond, Max: 500 * time.Millisecond},
		TwinTimeout: 300 * time.Millisecond,
		Desired:     func(ctx context.Context, p []byte) { r.rec.Patch(ctx, p) },
		Connected:   r.rec.Connected,
		Log:         zerolog.New(zerolog.NewTestWriter(t)),
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- sess.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return r
}

func lostHub(t *testing.T) *hubtest.Server {
	return hubtest.Start(t, hubemu.Config{Key: hubtest.Keys(map[string][]byte{"edge1/relay": moduleKey})})
}

// The hub never answers the twin GET made on connect: the relay asks
// again, and applies what was desired while it was away, without waiting
// for a reconnect or another patch; a later patch is applied too.
func TestLostTwinGet(t *testing.T) {
	hub := lostHub(t)
	if _, err := hub.UpdateDesired("edge1", "relay", json.RawMessage(`{"output":"away"}`)); err != nil {
		t.Fatal(err)
	}
	hub.LoseTwinAnswers(1)
	r := startRelay(t, hub)
	until.True(t, "the desired version 2 applied after a lost GET", func() bool {
		rep := r.reported(t)
		return rep.Status == twin.StatusApplied && rep.Version == 2 && r.last().Output == "away"
	})
	if _, err := hub.UpdateDesired("edge1", "relay", json.RawMessage(`{"output":"later"}`)); err != nil {
		t.Fatal(err)
	}
	until.True(t, "the later patch applied", func() bool {
		rep := r.reported(t)
		return rep.Version == 3 && rep.Effective.Output == "later" && r.last().Output == "later"
	})
}

// The hub never answers a reported patch: the next desired patch is
// applied and reported all the same.
func TestLostTwinReport(t *testing.T) {
	hub := lostHub(t)
	r := startRelay(t, hub)
	until.True(t, "the first report", func() bool { return r.reported(t).Status == twin.StatusApplied })
	hub.LoseTwinAnswers(1)
	if _, err := hub.UpdateDesired("edge1", "relay", json.RawMessage(`{"output":"first"}`)); err != nil {
		t.Fatal(err)
	}
	until.True(t, "version 2 applied", func() bool { return r.last().Output == "first" })
	if _, err := hub.UpdateDesired("edge1", "relay", json.RawMessage(`{"output":"second"}`)); err != nil {
		t.Fatal(err)
	}
	until.True(t, "version 3 applied and reported after a lost report", func() bool {
		rep := r.reported(t)
		return rep.Version == 3 && rep.Effective.Output == "second" && r.last().Output == "second"
	})
}
