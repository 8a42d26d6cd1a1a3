package hubtest

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/edgetpm/edgetpm/internal/emulator/hubemu"
	"github.com/edgetpm/edgetpm/internal/sas"
)

// FleetCode and FleetFailCode are the lastDesiredStatus codes a fleet's
// simulated edgeAgents report: edgeAgent's Successful and Failed.
const (
	FleetCode     = http.StatusOK
	FleetFailCode = http.StatusInternalServerError
)

// Fleet is a simulated fleet of edge devices for rollout tests: their ids,
// their tags, and edgeAgents (hubemu.Config.Agent) that accept every
// deployment except on the devices fail picks. Its methods are safe for
// concurrent use.
type Fleet struct {
	// Devices are the device ids, edge-0001 to edge-NNNN. They are
	// read-only: the emulator reads them at every reconciliation, so they
	// must not change once Configure or Start has been called.
	Devices []string

	tags map[string]map[string]any
	fail func(device string) bool

	mu      sync.Mutex
	desired map[string]json.RawMessage
}

// FleetDeviceID is the id of the fleet's i-th device, from 1.
func FleetDeviceID(i int) string { return fmt.Sprintf("edge-%04d", i) }

// NewFleet returns a fleet of n devices. tags(i), when tags is not nil,
// gives device i's tags (i from 1, nil for none); fail, when not nil,
// picks the devices whose edgeAgent reports FleetFailCode. fail is called
// at each deployment, so a test may change its answer between them.
func NewFleet(n int, tags func(i int) map[string]any, fail func(device string) bool) *Fleet {
	f := &Fleet{tags: map[string]map[string]any{}, fail: fail, desired: map[string]json.RawMessage{}}
	for i := 1; i <= n; i++ {
		d := FleetDeviceID(i)
		f.Devices = append(f.Devices, d)
		if tags != nil {
			if tg := tags(i); tg != nil {
				f.tags[d] = tg
			}
		}
	}
	return f
}

// Configure sets cfg.Devices and cfg.Agent for the fleet, and, when cfg.Key
// is nil, a Key that knows no identity (fleet devices do not connect).
func (f *Fleet) Configure(cfg *hubemu.Config) {
	cfg.Devices = func() []string { return f.Devices }
	cfg.Agent = f.agent
	if cfg.Key == nil {
		cfg.Key = func(string, string) ([]byte, bool) { return nil, false }
	}
}

// Start starts an emulator configured by cfg and the fleet (Configure) and
// gives every device its tags.
func (f *Fleet) Start(t testing.TB, cfg hubemu.Config) *Server {
	t.Helper()
	f.Configure(&cfg)
	s := Start(t, cfg)
	for _, d := range f.Devices {
		tags, ok := f.tags[d]
		if !ok {
			continue
		}
		b, err := json.Marshal(tags)
		if err != nil {
			t.Fatalf("tags of %s: %v", d, err)
		}
		if err := s.SetTags(d, b); err != nil {
			t.Fatal(err)
		}
	}
	return s
}

// Desired returns the $edgeAgent desired properties the device's
// simulated edgeAgent last received (with "$version"), nil if none.
func (f *Fleet) Desired(device string) json.RawMessage {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.desired[device]
}

func (f *Fleet) agent(device string, desired json.RawMessage) int {
	f.mu.Lock()
	f.desired[device] = desired
	f.mu.Unlock()
	if f.fail != nil && f.fail(device) {
		return FleetFailCode
	}
	return FleetCode
}

// Policy returns the service connection of a shared access policy (one of
// Config.ServicePolicies) for this emulator's hub.
func (s *Server) Policy(name string, key []byte) sas.Policy {
	return sas.Policy{HostName: s.HubHostName(), KeyName: name, Key: key}
}

// ServiceToken returns a service SAS token for the hub signed by policy
// name with key, valid for ttl from the emulator's clock.
func (s *Server) ServiceToken(t testing.TB, name string, key []byte, ttl time.Duration) string {
	t.Helper()
	tok, err := s.Policy(name, key).Token(context.Background(), s.Now().Add(ttl))
	if err != nil {
		t.Fatal(err)
	}
	return tok
}
