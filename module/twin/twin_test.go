package twin

import (
	"bytes"
	"context"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestParse(t *testing.T) {
	c, err := Parse([]byte(`{"$version":3,"layeredProperties":{"x":1},"output":"plant","batching":{"enabled":true,"linger":"250ms","compression":"gzip"},
		"sources":{"press":{"url":"tcp://127.0.0.1:1883","topics":{"all":{"filter":"plant/#","qos":1,"properties":{"line":"3"}}}},"oven":null}}`))
	if err != nil {
		t.Fatal(err)
	}
	if c.Output != "plant" || !c.Batching.Enabled || c.Batching.Linger != Duration(250*time.Millisecond) || c.Batching.MaxBytes != 65536 || c.Batching.Compression != "gzip" ||
		len(c.Sources) != 1 || c.Sources[0].Name != "press" || c.Sources[0].Topics[0].Name != "all" ||
		c.Sources[0].Topics[0].Properties["line"] != "3" || c.LogLevel != "info" {
		t.Errorf("Parse = %+v", c)
	}
	for _, tc := range []struct{ doc, want string }{
		{`{"output":"bad name"}`, "output"},
		{`{"logLevel":"loud"}`, "logLevel"},
		{`{"batching":{"maxBytes":300000}}`, "batching.maxBytes"},
		{`{"batching":{"lingr":"1s"}}`, "unknown field"},
		{`{"batching":{"compression":"zstd"}}`, "batching.compression"},
		{`{"queue":{"whenFull":"explode"}}`, "queue.whenFull"},
		{`{"reportInterval":"soon"}`, "duration"},
		{`{"sources":{"a":{"url":"tcp://h:1","topics":{}}}}`, "sources.a.topics"},
		{`{"sources":{"b c":{"url":"tcp://h:1","topics":{"t":{"filter":"x"}}}}}`, "sources.b c"},
		{`{"sources":{"a":{"url":"h","topics":{"t":{"filter":"x","qos":2}}}}}`, "sources.a.topics.t"},
		{`{"sources":{"a":{"url":"tcp://h:1","topics":{"t":{"filter":"x","qoss":1}}}}}`, "unknown field"},
		{`{"sources":[{"name":"a","url":"tcp://h:1"}]}`, "object keyed by name"},
		{`[1]`, "desired properties"},
		// The twin names variables, never their values, and only those
		// meant for a source's password: not the relay's identity or
		// settings, not IoT Edge's, not the TPM's hierarchy passwords.
		{src(`"url":"ssl://h:8883","passwordEnv":"EdgeHubConnectionString"`), "sources.a.passwordEnv"},
		{src(`"url":"ssl://h:8883","passwordEnv":"IotHubConnectionString"`), "sources.a.passwordEnv"},
		{src(`"url":"ssl://h:8883","passwordEnv":"IOTEDGE_WORKLOADURI"`), "sources.a.passwordEnv"},
		{src(`"url":"ssl://h:8883","passwordEnv":"IOTEDGE_ADMIN_PASSWORD"`), "sources.a.passwordEnv"},
		{src(`"url":"ssl://h:8883","passwordEnv":"EDGE_RELAY_CONFIG"`), "sources.a.passwordEnv"},
		{src(`"url":"ssl://h:8883","passwordEnv":"EDGE_RELAY_SOURCE_PASSWORD"`), "sources.a.passwordEnv"},
		{src(`"url":"ssl://h:8883","passwordEnv":"EDGE_TPM_OWNER_AUTH"`), "sources.a.passwordEnv"},
		{src(`"url":"ssl://h:8883","passwordEnv":"EDGE_TPM_OWNER_PASSWORD"`), "sources.a.passwordEnv"},
		{src(`"url":"ssl://h:8883","passwordEnv":"HTTPS_PROXY"`), "sources.a.passwordEnv"},
		{src(`"url":"ssl://h:8883","passwordEnv":"press_password"`), "sources.a.passwordEnv"},
		{src(`"url":"ssl://h:8883","passwordEnv":"_PASSWORD"`), "sources.a.passwordEnv"},
		// A password never travels in clear.
		{src(`"url":"tcp://h:1883","passwordEnv":"PRESS_PASSWORD"`), "plain tcp://"},
		{src(`"url":"mqtt://h","passwordEnv":"PRESS_PASSWORD"`), "plain mqtt://"},
		{src(`"url":"TCP://h:1883","passwordEnv":"PRESS_PASSWORD"`), "plain tcp://"},
		// A CA file is a path, not relative to wherever the relay runs.
		{src(`"url":"ssl://h:8883","caFile":"ca.pem"`), "sources.a.caFile"},
	} {
		if _, err := Parse([]byte(tc.doc)); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Parse(%s) = %v, want an error about %s", tc.doc, err, tc.want)
		}
	}
}

// src is desired properties with one source "a" of the given members and
// one topic.
func src(members string) string {
	return `{"sources":{"a":{` + members + `,"topics":{"t":{"filter":"x"}}}}}`
}

// A password is taken from a variable of the allowed names, and only for
// a broker reached over TLS.
func TestParseCredentials(t *testing.T) {
	for _, members := range []string{
		`"url":"ssl://h:8883","username":"relay","passwordEnv":"PRESS_PASSWORD"`,
		`"url":"mqtts://h","passwordEnv":"LINE_3_PASSWORD","caFile":"/etc/plant/ca.pem"`,
		`"url":"tcp://h:1883","username":"relay"`, // a user name alone is no secret
	} {
		if _, err := Parse([]byte(src(members))); err != nil {
			t.Errorf("Parse(%s) = %v, want it accepted", src(members), err)
		}
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte(`{"$version":1,"output":"x","sources":{"a":{"url":"tcp://h:1","topics":{"t":{"filter":"#"}}}}}`))
	f.Add([]byte(`{"batching":{"linger":5}}`))
	f.Add([]byte(`{"upstream":{"maxBytesPerSecond":2048,"timeToLiveSecs":{"0":60,"default":0}},"sources":{"a":{"url":"tcp://h:1","priority":3,"topics":{"t":{"filter":"#","priority":0}}}}}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := Parse(b)
		if err != nil {
			return
		}
		if err := c.Validate(); err != nil {
			t.Fatalf("Parse accepted an invalid configuration: %v", err)
		}
		// What is reported re-parses to the same configuration, and holds
		// no array (twins cannot).
		out, _ := json.Marshal(c)
		back, err := Parse(out)
		if err != nil {
			t.Fatalf("effective configuration does not parse back: %v\n%s", err, out)
		}
		if again, _ := json.Marshal(back); !bytes.Equal(again, out) {
			t.Fatalf("effective configuration changed on a round trip:\n%s\n%s", out, again)
		}
		if bytes.Contains(out, []byte("[")) {
			var v any
			json.Unmarshal(out, &v)
			if hasArray(v) {
				t.Fatalf("effective configuration holds an array: %s", out)
			}
		}
	})
}

// twinService is the twin as IoT Hub keeps it, reached through Get and
// Report the way the session reaches edgeHub.
type twinService struct {
	desired  map[string]any
	reported []map[string]any
	gets     int
}

func (s *twinService) get(context.Context) ([]byte, error) {
	s.gets++
	return json.Marshal(map[string]any{"desired": s.desired, "reported": map[string]any{"$version": 1}})
}

func (s *twinService) report(_ context.Context, patch []byte) error {
	var p map[string]any
	if err := json.Unmarshal(patch, &p); err != nil {
		return err
	}
	s.reported = append(s.reported, p["configuration"].(map[string]any))
	return nil
}

func (s *twinService) last() map[string]any { return s.reported[len(s.reported)-1] }

func TestReconciler(t *testing.T) {
	svc := &twinService{desired: map[string]any{"$version": 3.0, "output": "plant", "logLevel": "debug"}}
	var applied []Config
	state := filepath.Join(t.TempDir(), "desired.json")
	r := &Reconciler{Get: svc.get, Report: svc.report, StatePath: state, Apply: func(_ context.Context, c Config) error { applied = append(applied, c); return nil }}
	if c, err := r.Start(t.Context()); err != nil || c.Output != "telemetry" {
		t.Fatalf("Start without state = %+v, %v; want the defaults", c, err)
	}
	ctx := t.Context()
	if err := r.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if r.Version() != 3 || applied[len(applied)-1].Output != "plant" || svc.last()["status"] != "applied" || svc.last()["version"] != 3.0 {
		t.Fatalf("after Sync: version %d, applied %+v, reported %v", r.Version(), applied, svc.last())
	}
	n := len(applied)
	// A duplicate and an old patch change nothing.
	for _, p := range []string{`{"$version":3,"output":"old"}`, `{"$version":2,"output":"older"}`} {
		if err := r.Patch(ctx, []byte(p)); err != nil || len(applied) != n {
			t.Errorf("Patch(%s) = %v, applied %d times, want ignored", p, err, len(applied)-n)
		}
	}
	// The next version merges; null deletes.
	if err := r.Patch(ctx, []byte(`{"$version":4,"logLevel":null,"batching":{"enabled":true}}`)); err != nil {
		t.Fatal(err)
	}
	if c := applied[len(applied)-1]; r.Version() != 4 || c.LogLevel != "info" || !c.Batching.Enabled || c.Output != "plant" {
		t.Errorf("after patch 4: version %d, config %+v", r.Version(), c)
	}
	// An invalid document is rejected; the last good configuration stays.
	if err := r.Patch(ctx, []byte(`{"$version":5,"queue":{"whenFull":"explode"}}`)); err != nil {
		t.Fatal(err)
	}
	if last := svc.last(); r.Version() != 5 || last["status"] != "rejected" || !strings.Contains(last["reason"].(string), "whenFull") ||
		last["effective"].(map[string]any)["output"] != "plant" || last["appliedVersion"] != 4.0 {
		t.Errorf("after invalid patch 5: version %d, reported %v", r.Version(), last)
	}
	// A gap fetches the whole twin.
	svc.desired = map[string]any{"$version": 9.0, "output": "line9"}
	gets := svc.gets
	if err := r.Patch(ctx, []byte(`{"$version":9,"output":"line9"}`)); err != nil {
		t.Fatal(err)
	}
	if svc.gets != gets+1 || r.Version() != 9 || applied[len(applied)-1].Output != "line9" {
		t.Errorf("gap: gets %d→%d, version %d, config %+v", gets, svc.gets, r.Version(), applied[len(applied)-1])
	}

	// A restart offline starts from the last good configuration.
	r2 := &Reconciler{Get: svc.get, Report: svc.report, StatePath: state, Apply: func(context.Context, Config) error { return nil }}
	if c, err := r2.Start(t.Context()); err != nil || c.Output != "line9" {
		t.Errorf("Start after a restart = %+v, %v; want the last good configuration", c, err)
	}
}

// A Sync whose GET was answered before a patch applied a later version
// does not go back to the older one (edgehub runs Connected's Sync and the
// Desired callback on goroutines of their own).
func TestReconcilerStaleGet(t *testing.T) {
	svc := &twinService{desired: map[string]any{"$version": 1.0, "output": "a"}}
	answered, release := make(chan struct{}), make(chan struct{})
	slow := true
	r := &Reconciler{Report: svc.report, Apply: func(context.Context, Config) error { return nil }}
	r.Get = func(ctx context.Context) ([]byte, error) {
		b, err := svc.get(ctx)
		if slow {
			slow = false
			close(answered)
			<-release
		}
		return b, err
	}
	r.Start(t.Context())
	done := make(chan error, 1)
	go func() { done <- r.Sync(t.Context()) }()
	<-answered // the first GET holds version 1
	svc.desired = map[string]any{"$version": 2.0, "output": "b"}
	if err := r.Patch(t.Context(), []byte(`{"$version":2,"output":"b"}`)); err != nil {
		t.Fatal(err)
	}
	close(release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if last := svc.last(); r.Version() != 2 || last["version"] != 2.0 || last["effective"].(map[string]any)["output"] != "b" {
		t.Errorf("after a stale GET of version 1: version %d, reported %v; want version 2 kept", r.Version(), last)
	}
	// A twin made anew starts over at a lower version, and is applied.
	svc.desired = map[string]any{"$version": 1.0, "output": "c"}
	if err := r.Sync(t.Context()); err != nil || r.Version() != 1 || svc.last()["effective"].(map[string]any)["output"] != "c" {
		t.Errorf("a twin made anew: version %d, reported %v, %v", r.Version(), svc.last(), err)
	}
}

func TestReconcilerApplyFailureKeepsConfig(t *testing.T) {
	svc := &twinService{desired: map[string]any{"$version": 1.0, "output": "a"}}
	fail := false
	r := &Reconciler{Get: svc.get, Report: svc.report, Apply: func(_ context.Context, c Config) error {
		if fail {
			return context.DeadlineExceeded
		}
		return nil
	}}
	r.Start(t.Context())
	if err := r.Sync(t.Context()); err != nil {
		t.Fatal(err)
	}
	fail = true
	if err := r.Patch(t.Context(), []byte(`{"$version":2,"output":"b"}`)); err != nil {
		t.Fatal(err)
	}
	if last := svc.last(); last["status"] != "rejected" || last["effective"].(map[string]any)["output"] != "a" {
		t.Errorf("a configuration the relay could not apply = %v, want rejected with the old one effective", last)
	}
}

func hasArray(v any) bool {
	switch x := v.(type) {
	case []any:
		return true
	case map[string]any:
		for _, e := range x {
			if hasArray(e) {
				return true
			}
		}
	}
	return false
}

// What the reconciler reports decodes into the typed report that readers
// of the twin (the lab, operators' tools) share with it.
func TestReportedProperties(t *testing.T) {
	var patches [][]byte
	svc := &twinService{desired: map[string]any{"$version": 2.0, "output": "plant"}}
	r := &Reconciler{Get: svc.get, Apply: func(context.Context, Config) error { return nil }, Counters: func() any { return map[string]int{"relayed": 7} }}
	r.Report = func(ctx context.Context, p []byte) error { patches = append(patches, p); return svc.report(ctx, p) }
	r.Start(t.Context())
	if err := r.Sync(t.Context()); err != nil {
		t.Fatal(err)
	}
	if err := r.Patch(t.Context(), []byte(`{"$version":3,"inFlight":0}`)); err != nil {
		t.Fatal(err)
	}
	var got []Reported
	for _, p := range patches {
		var rp ReportedProperties
		if err := json.Unmarshal(p, &rp); err != nil || rp.Configuration == nil {
			t.Fatalf("Unmarshal(%s) = %+v, %v", p, rp, err)
		}
		got = append(got, *rp.Configuration)
	}
	if len(got) != 2 {
		t.Fatalf("%d reports, want 2", len(got))
	}
	if a := got[0]; a.Version != 2 || a.Status != StatusApplied || a.Reason != "" || a.AppliedVersion != 2 || a.Effective.Output != "plant" || a.Counters == nil {
		t.Errorf("report of version 2 = %+v, want applied with output plant and counters", a)
	}
	if b := got[1]; b.Version != 3 || b.Status != StatusRejected || !strings.Contains(b.Reason, "inFlight") || b.AppliedVersion != 2 || b.Effective.Output != "plant" {
		t.Errorf("report of version 3 = %+v, want rejected, version 2 still effective", b)
	}
}
