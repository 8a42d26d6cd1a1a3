package rollout

import (
	"encoding/json"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edgetpm/edgetpm/internal/emulator/hubemu"
	"github.com/edgetpm/edgetpm/internal/hubservice"
	"github.com/edgetpm/edgetpm/internal/testharness/hubtest"
)

var ownerKey = []byte("iothubowner-key-0123456789abcdef")

// fleet is 200 simulated edge devices: edge-0001 to edge-0010 are the
// canaries; every device has a bucket 0..99 (i mod 100), so that
// "tags.bucket < 10" is a tenth of the fleet.
func fleet(t *testing.T, failing func(string) bool) (*hubtest.Fleet, *hubservice.Client) {
	t.Helper()
	f := hubtest.NewFleet(200, func(i int) map[string]any {
		tags := map[string]any{"bucket": i % 100, "site": []string{"north", "south"}[i%2]}
		if i <= 10 {
			tags["ring"] = "canary"
		}
		return tags
	}, failing)
	hub := f.Start(t, hubemu.Config{ServicePolicies: map[string][]byte{"iothubowner": ownerKey}})
	return f, &hubservice.Client{Conn: hub.Policy("iothubowner", ownerKey), Endpoint: hub.URL, HTTP: hub.HTTP}
}

func content(image string) json.RawMessage {
	return json.RawMessage(`{"modulesContent":{
		"$edgeAgent":{"properties.desired":{"schemaVersion":"1.1","runtime":{"type":"docker","settings":{}},
			"systemModules":{"edgeAgent":{"type":"docker","settings":{"image":"mcr.microsoft.com/azureiotedge-agent:1.5"}},
				"edgeHub":{"type":"docker","status":"running","restartPolicy":"always","settings":{"image":"mcr.microsoft.com/azureiotedge-hub:1.5"}}},
			"modules":{"relay":{"type":"docker","status":"running","restartPolicy":"always","settings":{"image":"` + image + `"}}}}},
		"$edgeHub":{"properties.desired":{"schemaVersion":"1.2","routes":{"up":"FROM /messages/* INTO $upstream"},"storeAndForwardConfiguration":{"timeToLiveSecs":7200}}}}}`)
}

func plan(image string) Plan {
	return Plan{
		ID: "relay-2", Content: content(image), Priority: 20, Poll: 10 * time.Millisecond,
		Waves: []Wave{
			{Name: "canary", Target: "tags.ring='canary'", Timeout: 2 * time.Second},
			{Name: "tenth", Target: "tags.ring='canary' OR tags.bucket < 10", MinSuccess: 0.95, MaxFailures: 1, Timeout: 2 * time.Second},
			{Name: "all", Target: "tags.bucket >= 0", MinSuccess: 0.95, MaxFailures: 5, Timeout: 2 * time.Second},
		},
	}
}

// image returns the relay image a device's edgeAgent last received.
func image(f *hubtest.Fleet, device string) string {
	var d struct {
		Modules struct {
			Relay struct {
				Settings struct {
					Image string `json:"image"`
				} `json:"settings"`
			} `json:"relay"`
		} `json:"modules"`
	}
	if f.Desired(device) != nil && json.Unmarshal(f.Desired(device), &d) != nil {
		panic("desired properties of " + device + " are not JSON")
	}
	return d.Modules.Relay.Settings.Image
}

func TestHealthyRollout(t *testing.T) {
	f, hub := fleet(t, nil)
	ctx := t.Context()
	var seen atomic.Int64
	rep, err := Run(ctx, hub, plan("edgetpm/edge-relay:2"), func(WaveStatus) { seen.Add(1) })
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]int64{"canary": 10, "tenth": 21, "all": 200} // tenth: 1-10, 100-109 and 200
	for _, w := range rep.Waves {
		if w.Verdict != "healthy" || w.Targeted != want[w.Wave] || w.Succeeded != want[w.Wave] || w.Failed != 0 {
			t.Errorf("wave %+v, want healthy with %d targeted and succeeded", w, want[w.Wave])
		}
	}
	for _, d := range f.Devices {
		if got := image(f, d); got != "edgetpm/edge-relay:2" {
			t.Fatalf("%s runs %q after the rollout", d, got)
		}
	}
	// Run again: it goes on where it is, creating nothing new.
	if _, err := Run(ctx, hub, plan("edgetpm/edge-relay:2"), nil); err != nil {
		t.Fatal(err)
	}
	// Other content under the same id is refused, not half-applied.
	if _, err := Run(ctx, hub, plan("edgetpm/edge-relay:3"), nil); err == nil || !strings.Contains(err.Error(), "other content") {
		t.Errorf("a changed deployment under the same id: %v", err)
	}
	st, err := Status(ctx, hub, plan("edgetpm/edge-relay:2"))
	if err != nil || st.Halted != "" || st.Waves[2].Succeeded != 200 || st.Waves[2].Applied != 179 {
		t.Errorf("Status = %+v, %v", st, err)
	}
}

// Two canaries fail: the rollout halts at the canary wave with a report,
// no device beyond the canaries gets the deployment, and a rollback takes
// the canaries back to what they had.
func TestCanaryHalts(t *testing.T) {
	failing := func(d string) bool { return d == "edge-0003" || d == "edge-0007" }
	f, hub := fleet(t, failing)
	ctx := t.Context()
	// What the fleet runs now: the base deployment at a lower priority.
	base := Plan{ID: "relay-1", Content: content("edgetpm/edge-relay:1"), Priority: 10, Poll: 10 * time.Millisecond,
		Waves: []Wave{{Name: "all", Target: "tags.bucket >= 0", MaxFailures: 200, MinSuccess: 0.5, Timeout: time.Second}}}
	if _, err := Run(ctx, hub, base, nil); err != nil {
		t.Fatal(err)
	}

	p := plan("edgetpm/edge-relay:2")
	rep, err := Run(ctx, hub, p, nil)
	if !errors.Is(err, ErrHalted) || rep.Halted != "canary" {
		t.Fatalf("Run = %+v, %v; want halted at canary", rep, err)
	}
	c := rep.Waves[0]
	if c.Verdict != "unhealthy" || c.Targeted != 10 || c.Failed != 2 || c.Succeeded != 8 || !strings.Contains(c.Reason, "2 of 10 devices failed") {
		t.Errorf("canary wave %+v", c)
	}
	if rep.Waves[1].Verdict != "not started" || rep.Waves[2].Verdict != "not started" {
		t.Errorf("later waves %+v", rep.Waves[1:])
	}
	for i, d := range f.Devices {
		want := "edgetpm/edge-relay:1"
		if i < 10 {
			want = "edgetpm/edge-relay:2"
		}
		if got := image(f, d); got != want {
			t.Fatalf("%s runs %q, want %q", d, got, want)
		}
	}
	st, err := Status(ctx, hub, p)
	if err != nil || st.Halted != "canary" || st.Waves[1].Exists {
		t.Errorf("Status = %+v, %v", st, err)
	}

	deleted, err := Rollback(ctx, hub, p, "canary")
	if err != nil || len(deleted) != 1 || deleted[0] != "relay-2-canary" {
		t.Fatalf("Rollback = %v, %v", deleted, err)
	}
	for _, d := range f.Devices[:10] {
		if got := image(f, d); got != "edgetpm/edge-relay:1" {
			t.Errorf("%s runs %q after the rollback", d, got)
		}
	}
	if _, err := Rollback(ctx, hub, p, "nope"); err == nil {
		t.Error("rollback of an unknown wave")
	}
	// A configuration of the same name that another rollout (or a person)
	// made is left alone.
	other := hubservice.Configuration{ID: "relay-2-all", Content: content("theirs"), TargetCondition: "tags.ring='none'", Labels: map[string]string{"owner": "ops"}}
	if _, err := hub.PutConfiguration(ctx, other, ""); err != nil {
		t.Fatal(err)
	}
	if _, err := Rollback(ctx, hub, p, "all"); err == nil || !strings.Contains(err.Error(), "left alone") {
		t.Errorf("Rollback of a configuration not ours: %v", err)
	}
	if _, err := hub.GetConfiguration(ctx, "relay-2-all"); err != nil {
		t.Errorf("the other configuration is gone: %v", err)
	}
}

// A wave that does not reach its share of successes within its time is
// unhealthy.
func TestWaveTimesOut(t *testing.T) {
	_, hub := fleet(t, nil)
	p := plan("edgetpm/edge-relay:2")
	p.Waves = []Wave{{Name: "nobody", Target: "tags.ring='none'", Timeout: 50 * time.Millisecond}}
	rep, err := Run(t.Context(), hub, p, nil)
	if !errors.Is(err, ErrHalted) || !strings.Contains(rep.Waves[0].Reason, "no device targeted") {
		t.Errorf("Run = %+v, %v", rep, err)
	}
}

func TestPlanValidate(t *testing.T) {
	w := []Wave{{Name: "w", Target: "t", Timeout: 1}}
	for want, p := range map[string]Plan{
		"id: empty":                    {Content: content("x"), Waves: plan("x").Waves},
		`id: "Relay": want lowercase`:  {ID: "Relay", Content: content("x"), Waves: w},
		"no waves":                     {ID: "a", Content: content("x")},
		"wave 2: want a unique name":   {ID: "a", Content: content("x"), Waves: []Wave{{Name: "w", Target: "t", Timeout: 1}, {Name: "w", Target: "t", Timeout: 1}}},
		`wave w 1: "a-w 1": no spaces`: {ID: "a", Content: content("x"), Waves: []Wave{{Name: "w 1", Target: "t", Timeout: 1}}},
		"wave w: no target":            {ID: "a", Content: content("x"), Waves: []Wave{{Name: "w", Timeout: 1}}},
		"minSuccess 2":                 {ID: "a", Content: content("x"), Waves: []Wave{{Name: "w", Target: "t", MinSuccess: 2, Timeout: 1}}},
		"wave w: want a timeout":       {ID: "a", Content: content("x"), Waves: []Wave{{Name: "w", Target: "t"}}},
		"content is not":               {ID: "a", Content: json.RawMessage(`{"x":1}`), Waves: w},
	} {
		if err := p.Validate(); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Validate(%+v) = %v, want an error with %q", p, err, want)
		}
	}
}

// A wave that wants all its devices but tolerates a failure is healthy
// once every other device succeeded.
func TestToleratedFailure(t *testing.T) {
	_, hub := fleet(t, func(d string) bool { return d == "edge-0002" })
	p := plan("edgetpm/edge-relay:2")
	p.Waves = []Wave{{Name: "canary", Target: "tags.ring='canary'", MaxFailures: 1, Timeout: 2 * time.Second}}
	rep, err := Run(t.Context(), hub, p, nil)
	if err != nil || rep.Waves[0].Verdict != "healthy" || rep.Waves[0].Succeeded != 9 || rep.Waves[0].Failed != 1 {
		t.Errorf("Run = %+v, %v", rep, err)
	}
}

// A wave counts only its own devices: failures elsewhere in the hub, under
// the deployment the fleet had, do not hold the canaries back.
func TestWaveCountsItsOwn(t *testing.T) {
	_, hub := fleet(t, func(d string) bool { return d == "edge-0150" })
	base := Plan{ID: "relay-1", Content: content("edgetpm/edge-relay:1"), Priority: 10, Poll: 10 * time.Millisecond,
		Waves: []Wave{{Name: "all", Target: "tags.bucket >= 0", MaxFailures: 1, Timeout: time.Second}}}
	if _, err := Run(t.Context(), hub, base, nil); err != nil {
		t.Fatal(err)
	}
	p := plan("edgetpm/edge-relay:2")
	p.Waves = p.Waves[:1]
	rep, err := Run(t.Context(), hub, p, nil)
	if err != nil || rep.Waves[0].Succeeded != 10 || rep.Waves[0].Failed != 0 {
		t.Errorf("canary wave with a failure outside it: %+v, %v", rep, err)
	}
}
