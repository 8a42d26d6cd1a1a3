package enroll

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"flag"
	"fmt"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/edgetpm/edgetpm/internal/dpsservice"
	"github.com/edgetpm/edgetpm/internal/ekcert/ekcerttest"
	"github.com/edgetpm/edgetpm/internal/emulator/dpsemu"
)

func TestSettingsValidate(t *testing.T) {
	for _, tc := range []struct {
		s   Settings
		err string
	}{
		{Settings{}, ""},
		{Settings{AllocationPolicy: "static", IoTHubs: []string{"a.x"}}, ""},
		{Settings{AllocationPolicy: "static", IoTHubs: []string{"a.x", "b.x"}}, "exactly one"},
		{Settings{AllocationPolicy: "random"}, "allocation policy"},
		{Settings{IoTHubs: []string{"https://a.x"}}, "not a host name"},
		{Settings{ProvisioningStatus: "off"}, "provisioning status"},
		{Settings{Reprovision: "sometimes"}, "reprovision policy"},
		{Settings{DeviceID: "a b"}, "device ID"},
		{Settings{Tags: map[string]json.RawMessage{TagKey: []byte("1")}}, "enroll's own"},
	} {
		err := tc.s.Validate()
		if (tc.err == "") != (err == nil) || err != nil && !strings.Contains(err.Error(), tc.err) {
			t.Errorf("Validate(%+v) = %v, want %q", tc.s, err, tc.err)
		}
	}
	if e := created(Settings{IoTHubs: []string{"a.x"}}.enrollment("a", nil, &Check{})); e.AllocationPolicy != dpsservice.AllocationHashed {
		t.Errorf("created with hubs and no policy: policy %q, want hashed said", e.AllocationPolicy)
	}
}

func TestDiff(t *testing.T) {
	ek, _ := fakeEK(t)
	want := Settings{IoTEdge: new(true), ProvisioningStatus: dpsservice.StatusEnabled, Reprovision: ReprovisionMigrate, Tags: map[string]json.RawMessage{"site": []byte(`"p7"`)}}.enrollment("dev1", ek, &Check{Verified: true})
	held := func(f func(e *dpsservice.Enrollment)) *dpsservice.Enrollment {
		e := want
		e.ETag, e.AllocationPolicy, e.IoTHubs = `"1"`, "hashed", []string{"h.x"} // DPS's defaults
		e.InitialTwin = json.RawMessage(`{"tags":{"site":"p7","tpm":{"ekVerified":true,"ekAnchor":"manufacturer"}},"properties":{"desired":{"$metadata":{},"$version":1}}}`)
		e.ReprovisionPolicy = nil
		f(&e)
		return &e
	}
	for _, tc := range []struct {
		name string
		f    func(e *dpsservice.Enrollment)
		want string
	}{
		{"same", func(*dpsservice.Enrollment) {}, ""},
		{"device ID", func(e *dpsservice.Enrollment) { e.DeviceID = "x" }, "deviceId"},
		{"EK", func(e *dpsservice.Enrollment) {
			e.Attestation.TPM = &dpsservice.TPMAttestation{EndorsementKey: []byte{1}}
		}, "endorsementKey"},
		{"not edge", func(e *dpsservice.Enrollment) { e.Capabilities = nil }, "capabilities"},
		{"disabled", func(e *dpsservice.Enrollment) { e.ProvisioningStatus = "disabled" }, "provisioningStatus"},
		{"reprovision", func(e *dpsservice.Enrollment) { e.ReprovisionPolicy = &dpsservice.ReprovisionPolicy{} }, "reprovisionPolicy"},
		{"tag", func(e *dpsservice.Enrollment) {
			e.InitialTwin = json.RawMessage(`{"tags":{"site":"p8","tpm":{"ekVerified":true,"ekAnchor":"manufacturer"}}}`)
		}, "initialTwin"},
		{"no twin", func(e *dpsservice.Enrollment) { e.InitialTwin = nil }, "initialTwin"},
	} {
		if got := strings.Join(diff(held(tc.f), &want), ","); got != tc.want {
			t.Errorf("%s: diff = %q, want %q", tc.name, got, tc.want)
		}
	}
	w2 := want
	w2.IoTHubs, w2.AllocationPolicy = []string{"H.x"}, "hashed"
	if d := diff(held(func(*dpsservice.Enrollment) {}), &w2); len(d) != 0 {
		t.Errorf("hubs differing in case: diff %v", d)
	}
	w2.IoTHubs = []string{"other.x"}
	if d := diff(held(func(*dpsservice.Enrollment) {}), &w2); strings.Join(d, ",") != "iotHubs" {
		t.Errorf("other hub: diff %v", d)
	}
}

// spy counts the enrollments each write carried to DPS successfully, and
// can act between enroll's read and its writes.
type spy struct {
	Service
	mu          sync.Mutex
	writes      map[string]int
	calls       int
	beforeWrite func()
}

func newSpy(s Service) *spy { return &spy{Service: s, writes: map[string]int{}} }

func (s *spy) before() {
	s.mu.Lock()
	f := s.beforeWrite
	s.beforeWrite = nil
	s.calls++
	s.mu.Unlock()
	if f != nil {
		f()
	}
}

func (s *spy) PutEnrollment(ctx context.Context, e dpsservice.Enrollment, ifMatch string) (*dpsservice.Enrollment, error) {
	s.before()
	out, err := s.Service.PutEnrollment(ctx, e, ifMatch)
	if err == nil {
		s.mu.Lock()
		s.writes[e.RegistrationID]++
		s.mu.Unlock()
	}
	return out, err
}

func (s *spy) Bulk(ctx context.Context, mode string, es []dpsservice.Enrollment) (*dpsservice.BulkResult, error) {
	s.before()
	res, err := s.Service.Bulk(ctx, mode, es)
	if err != nil {
		return res, err
	}
	failed := map[string]bool{}
	for _, e := range res.Errors {
		failed[e.RegistrationID] = true
	}
	s.mu.Lock()
	for _, e := range es {
		if !failed[e.RegistrationID] {
			s.writes[e.RegistrationID]++
		}
	}
	s.mu.Unlock()
	return res, err
}

func outcomes(rep *Report) map[string]Outcome {
	m := map[string]Outcome{}
	for _, r := range rep.Results {
		if _, dup := m[r.RegistrationID]; !dup {
			m[r.RegistrationID] = r.Outcome
		}
	}
	return m
}

func twinTag(t *testing.T, e dpsservice.Enrollment) map[string]any {
	t.Helper()
	var twin struct {
		Tags map[string]any `json:"tags"`
	}
	if err := json.Unmarshal(e.InitialTwin, &twin); err != nil {
		t.Fatalf("initial twin %s: %v", e.InitialTwin, err)
	}
	tag, _ := twin.Tags[TagKey].(map[string]any)
	return tag
}

// Genuine EKs are enrolled, with their manufacturer and model in the
// twin; every other identity is refused, alone, unless unverified EKs are
// allowed, and then they are marked.
func TestEnrollVerifies(t *testing.T) {
	d := startDPS(t, dpsemu.Config{})
	ca, rogue := ekcerttest.NewCA(t), ekcerttest.NewCA(t)
	good := []Record{record(t, "good-1", ca), record(t, "good-2", ca), record(t, "good-3", ca)}
	wrongKey := record(t, "wrong-key", nil)
	_, other := fakeEK(t)
	wrongKey.Certificate, wrongKey.Chain = certPEM(ca.Issue(other)), []string{certPEM(ca.Intermediate.Raw)}
	noChain := record(t, "no-chain", ca)
	noChain.Chain = nil
	badEK := record(t, "bad-ek", ca)
	badEK.EndorsementKey = base64.StdEncoding.EncodeToString([]byte("not a TPM2B_PUBLIC"))
	recs := append(good,
		record(t, "no-cert", nil), wrongKey, record(t, "rogue", rogue), noChain, badEK,
		Record{RegistrationID: "GOOD-1", EndorsementKey: good[0].EndorsementKey},
		Record{RegistrationID: "bad id", EndorsementKey: good[0].EndorsementKey},
	)
	svc := newSpy(d.svc)
	rep, err := Enroll(t.Context(), svc, recs, Options{Verifier: verifier(t, ca), Settings: Settings{IoTEdge: new(true)}})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]Outcome{"good-1": Created, "good-2": Created, "good-3": Created,
		"no-cert": Refused, "wrong-key": Refused, "rogue": Refused, "no-chain": Refused, "bad-ek": Refused, "GOOD-1": Refused, "bad id": Refused}
	if got := outcomes(rep); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("outcomes %v, want %v", got, want)
	}
	if rep.OK() || rep.Totals[Created] != 3 || rep.Totals[Refused] != 7 {
		t.Errorf("totals %v, OK %t", rep.Totals, rep.OK())
	}
	for _, r := range rep.Results {
		if r.Outcome == Refused && r.Error == "" {
			t.Errorf("%s refused without a reason", r.RegistrationID)
		}
		if r.RegistrationID == "good-1" && (r.EK == nil || !r.EK.Verified || r.EK.Manufacturer != "Infineon" || r.EK.Model != "SLB9672") {
			t.Errorf("good-1 check %+v", r.EK)
		}
	}
	held := d.all(t)
	if len(held) != 3 {
		t.Errorf("DPS holds %d enrollments, want the 3 genuine", len(held))
	}
	// The test CA is the operator's anchor, not a bundled manufacturer's.
	if tag := twinTag(t, held["good-2"]); tag["ekVerified"] != true || tag["ekAnchor"] != "operator" || tag["manufacturer"] != "Infineon" || tag["model"] != "SLB9672" {
		t.Errorf("good-2 tag %v", tag)
	}
	for _, r := range rep.Results {
		if r.RegistrationID == "good-2" && (!r.EK.OperatorAnchor || r.EK.Anchor != ca.Root.Subject.String()) {
			t.Errorf("good-2 check %+v, want the operator's anchor named", r.EK)
		}
	}

	// Unverified EKs are enrolled when allowed, marked; bad records stay
	// refused, and so does an EK paired with another EK's certificate (a
	// line mixed up on the way); the genuine ones are left alone.
	svc.writes = map[string]int{}
	rep, err = Enroll(t.Context(), svc, recs, Options{Verifier: verifier(t, ca), AllowUnverified: true, Settings: Settings{IoTEdge: new(true)}})
	if err != nil {
		t.Fatal(err)
	}
	want = map[string]Outcome{"good-1": Unchanged, "good-2": Unchanged, "good-3": Unchanged,
		"no-cert": Created, "wrong-key": Refused, "rogue": Created, "no-chain": Created, "bad-ek": Refused, "GOOD-1": Refused, "bad id": Refused}
	if got := outcomes(rep); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("allowing unverified: outcomes %v, want %v", got, want)
	}
	held = d.all(t)
	for _, id := range []string{"no-cert", "rogue", "no-chain"} {
		if tag := twinTag(t, held[id]); tag["ekVerified"] != false {
			t.Errorf("%s: tag %v, want ekVerified false", id, tag)
		}
		if svc.writes[id] != 1 {
			t.Errorf("%s written %d times", id, svc.writes[id])
		}
	}
	for _, r := range rep.Results {
		if r.Outcome == Created && (r.EK == nil || r.EK.Verified || r.EK.Problem == "") {
			t.Errorf("%s: check %+v, want the problem", r.RegistrationID, r.EK)
		}
	}
	if _, err := Enroll(t.Context(), svc, recs, Options{}); err == nil {
		t.Error("Enroll without a verifier nor AllowUnverified ran")
	}
}

// A re-run writes nothing; a change is an update with the ETag read; a
// change made in DPS between the read and the write is a conflict, which
// the next run settles; a dry run writes nothing.
func TestEnrollRerun(t *testing.T) {
	d := startDPS(t, dpsemu.Config{})
	ca := ekcerttest.NewCA(t)
	var recs []Record
	for i := range 12 {
		recs = append(recs, record(t, fmt.Sprintf("dev-%02d", i), ca))
	}
	opts := Options{Verifier: verifier(t, ca), Settings: Settings{IoTEdge: new(true), Tags: map[string]json.RawMessage{"site": []byte(`"p7"`)}}}
	svc := newSpy(d.svc)
	if rep, err := Enroll(t.Context(), svc, recs, opts); err != nil || rep.Totals[Created] != 12 {
		t.Fatalf("first run: %v, %v", rep, err)
	}
	svc.calls = 0
	rep, err := Enroll(t.Context(), svc, recs, opts)
	if err != nil || rep.Totals[Unchanged] != 12 || svc.calls != 0 {
		t.Fatalf("re-run: totals %v, %d writes, %v", rep.Totals, svc.calls, err)
	}
	if rep.Operations != 12 { // a GET each
		t.Errorf("re-run: %d operations, want 12", rep.Operations)
	}

	before := d.all(t)
	recs[3].DeviceID = "press-3"
	recs[4].Tags = map[string]json.RawMessage{"line": []byte(`"2"`)}
	rep, err = Enroll(t.Context(), svc, recs, Options{Verifier: opts.Verifier, Settings: opts.Settings, DryRun: true})
	if err != nil || rep.Totals[Updated] != 2 || !rep.DryRun {
		t.Fatalf("dry run: totals %v, %v", rep.Totals, err)
	}
	if after := d.all(t); after["dev-03"].ETag != before["dev-03"].ETag {
		t.Error("dry run wrote")
	}

	// Someone changes dev-03 after enroll read it.
	svc.beforeWrite = func() {
		e, err := d.svc.GetEnrollment(t.Context(), "dev-03")
		if err != nil {
			t.Error(err)
			return
		}
		e.ProvisioningStatus = dpsservice.StatusDisabled
		if _, err := d.svc.PutEnrollment(t.Context(), *e, e.ETag); err != nil {
			t.Error(err)
		}
	}
	rep, err = Enroll(t.Context(), svc, recs, opts)
	if err != nil {
		t.Fatal(err)
	}
	if got := outcomes(rep); got["dev-03"] != Conflict || got["dev-04"] != Updated || rep.Totals[Unchanged] != 10 || rep.OK() {
		t.Errorf("outcomes %v", got)
	}
	for _, r := range rep.Results {
		if r.RegistrationID == "dev-04" && strings.Join(r.Changes, ",") != "initialTwin" {
			t.Errorf("dev-04 changes %v", r.Changes)
		}
	}
	rep, err = Enroll(t.Context(), svc, recs, opts)
	if got := outcomes(rep); err != nil || got["dev-03"] != Updated || rep.Totals[Unchanged] != 11 {
		t.Errorf("after the conflict: %v, %v", got, err)
	}
	e := d.all(t)["dev-03"]
	// The status disabled by hand is left alone: the run does not ask one.
	if e.DeviceID != "press-3" || e.ProvisioningStatus != dpsservice.StatusDisabled {
		t.Errorf("dev-03 = %+v", e)
	}
}

// Disable and delete change only what differs, and say which enrollments
// were absent.
func TestDisableDelete(t *testing.T) {
	d := startDPS(t, dpsemu.Config{})
	ca := ekcerttest.NewCA(t)
	var recs []Record
	var ids []string
	for i := range 15 {
		recs = append(recs, record(t, fmt.Sprintf("dev-%02d", i), ca))
		ids = append(ids, recs[i].RegistrationID)
	}
	if _, err := Enroll(t.Context(), d.svc, recs, Options{Verifier: verifier(t, ca)}); err != nil {
		t.Fatal(err)
	}
	rep, err := Disable(t.Context(), d.svc, append(ids[:12:12], "missing"), Options{})
	if err != nil || rep.Totals[Disabled] != 12 || rep.Totals[Absent] != 1 || !rep.OK() {
		t.Fatalf("disable: %v, %v", rep.Totals, err)
	}
	held := d.all(t)
	for i, id := range ids {
		if want := map[bool]string{true: "disabled", false: "enabled"}[i < 12]; held[id].ProvisioningStatus != want {
			t.Errorf("%s %s, want %s", id, held[id].ProvisioningStatus, want)
		}
	}
	if rep, err := Disable(t.Context(), d.svc, ids[:12], Options{}); err != nil || rep.Totals[Unchanged] != 12 {
		t.Errorf("disable again: %v, %v", rep.Totals, err)
	}
	shown, err := Show(t.Context(), d.svc, []string{"dev-00", "missing"}, nil)
	if err != nil || shown[0] == nil || shown[0].ProvisioningStatus != "disabled" || shown[1] != nil {
		t.Errorf("Show = %v, %v", shown, err)
	}
	rep, err = Delete(t.Context(), d.svc, append(ids, "missing"), Options{})
	if err != nil || rep.Totals[Deleted] != 15 || rep.Totals[Absent] != 1 {
		t.Fatalf("delete: %v, %v", rep.Totals, err)
	}
	if n := len(d.all(t)); n != 0 {
		t.Errorf("%d enrollments left", n)
	}
}

// The meter lets no minute hold more operations than its budget.
func TestMeter(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m, err := NewMeter(600)
		if err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		var times []time.Duration
		for range 1300 / dpsservice.MaxBulk {
			if err := m.wait(t.Context(), dpsservice.MaxBulk); err != nil {
				t.Fatal(err)
			}
			times = append(times, time.Since(start))
		}
		for i := range times {
			n := 0
			for j := i; j < len(times) && times[j]-times[i] < time.Minute; j++ {
				n += dpsservice.MaxBulk
			}
			if n > 600 {
				t.Fatalf("%d operations in the minute from %v", n, times[i])
			}
		}
		if ops, _ := m.Counts(); ops != 1300 {
			t.Errorf("counted %d operations", ops)
		}
		// A request sent again after a 429 is charged again.
		ctx := withOps(t.Context(), dpsservice.MaxBulk)
		m.OnRetry(ctx, 429, time.Second)
		m.OnRetry(ctx, 503, time.Second)
		before := time.Now()
		if err := m.wait(t.Context(), 1); err != nil {
			t.Fatal(err)
		}
		if waited, want := time.Since(before), 20*time.Minute/590; waited < want {
			t.Errorf("after two retries the next operation waited %v, want %v", waited, want)
		}
		if ops, thr := m.Counts(); ops != 1301 || thr != 1 {
			t.Errorf("counts %d operations, %d throttled; want 1301, 1", ops, thr)
		}
		// The first bulk at once, the other 1,290 at 590 a minute: 131.2 s.
		if last := times[len(times)-1]; last > 132*time.Second {
			t.Errorf("1,300 operations at 600 a minute took %v", last)
		}
	})
}

var (
	fleetSize = flag.Int("fleet", 300, "identities of TestEnrollFleet (the issue's figure: 10000)")
	fleetRate = flag.Int("fleet-ops-per-minute", 0, "DPS's operations a minute in TestEnrollFleet; 0 is 20 per identity, for a quick run")
)

// A fleet is enrolled in bulk within DPS's rate, through injected 429s,
// each identity written exactly once; a re-run writes nothing. With
// -fleet 10000 -fleet-ops-per-minute 1000 it is the issue's test, and
// prints its figures.
func TestEnrollFleet(t *testing.T) {
	n, opm := *fleetSize, *fleetRate
	if opm == 0 {
		opm = 20 * n
	}
	d := startDPS(t, dpsemu.Config{ServiceOpsPerMinute: opm, RetryAfter: 1})
	ca := ekcerttest.NewCA(t)
	start := time.Now()
	recs := make([]Record, n)
	for i := range recs {
		recs[i] = record(t, fmt.Sprintf("press-%05d", i), ca)
	}
	t.Logf("%d identities with EK certificates made in %v", n, time.Since(start).Round(time.Millisecond))
	const injected = 5
	d.srv.SetServiceFaults(dpsemu.Faults{Skip: 3, Throttle: injected, ThrottleRetryAfter: 1})
	m, err := NewMeter(opm)
	if err != nil {
		t.Fatal(err)
	}
	d.svc.OnRetry = m.OnRetry
	svc := newSpy(d.svc)
	var last int
	rep, err := Enroll(t.Context(), svc, recs, Options{Verifier: verifier(t, ca), Meter: m, Progress: func(done, total int) {
		if done < last || total != n {
			t.Errorf("progress %d/%d after %d", done, total, last)
		}
		last = done
	}})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("enrolled %d in %v: %d operations, %.0f a minute, %d answered 429", n, rep.Duration.Round(time.Millisecond), rep.Operations, rep.OperationsPerMinute, rep.Throttled)
	if rep.Totals[Created] != n || !rep.OK() || last != n {
		t.Fatalf("totals %v, progress %d", rep.Totals, last)
	}
	if rep.Throttled < injected {
		t.Errorf("%d 429s counted, %d injected", rep.Throttled, injected)
	}
	if rep.OperationsPerMinute > float64(opm)*1.02 {
		t.Errorf("%.0f operations a minute, over DPS's %d", rep.OperationsPerMinute, opm)
	}
	held := d.all(t)
	if len(held) != n {
		t.Errorf("DPS holds %d enrollments, want %d", len(held), n)
	}
	for _, r := range recs {
		e := held[r.RegistrationID]
		// Written once: DPS never updated what it created.
		if svc.writes[r.RegistrationID] != 1 || !e.LastUpdatedDateTimeUTC.Equal(e.CreatedDateTimeUTC) {
			t.Fatalf("%s written %d times, created %v, updated %v", r.RegistrationID, svc.writes[r.RegistrationID], e.CreatedDateTimeUTC, e.LastUpdatedDateTimeUTC)
		}
	}

	svc.calls = 0
	rep, err = Enroll(t.Context(), svc, recs, Options{Verifier: verifier(t, ca), Meter: m})
	if err != nil || rep.Totals[Unchanged] != n || svc.calls != 0 {
		t.Fatalf("re-run: totals %v, %d writes, %v", rep.Totals, svc.calls, err)
	}
	if pages := int64((n + queryPage - 1) / queryPage); n > getMax && rep.Operations != pages {
		t.Errorf("re-run: %d operations, want %d query pages", rep.Operations, pages)
	}
	t.Logf("re-run: %d unchanged in %v, %d operations", n, rep.Duration.Round(time.Millisecond), rep.Operations)
}

// An enrollment that appears in DPS between the read and the create is a
// conflict, never overwritten, even when it is the only one to create.
func TestEnrollCreateAppeared(t *testing.T) {
	d := startDPS(t, dpsemu.Config{})
	ca := ekcerttest.NewCA(t)
	rec := record(t, "late", ca)
	other := record(t, "late", ca)
	svc := newSpy(d.svc)
	svc.beforeWrite = func() {
		if _, err := Enroll(t.Context(), d.svc, []Record{other}, Options{Verifier: verifier(t, ca)}); err != nil {
			t.Error(err)
		}
	}
	rep, err := Enroll(t.Context(), svc, []Record{rec}, Options{Verifier: verifier(t, ca)})
	if err != nil {
		t.Fatal(err)
	}
	if got := outcomes(rep)["late"]; got != Conflict {
		t.Errorf("outcome %s, want conflict", got)
	}
	if e := d.all(t)["late"]; e.Attestation.TPM == nil || base64.StdEncoding.EncodeToString(e.Attestation.TPM.EndorsementKey) != other.EndorsementKey {
		t.Error("the enrollment that appeared was overwritten")
	}
}

// cancelling is a Service whose Bulk reaches DPS and then sees the run
// stopped, as when Ctrl-C comes while the answer is on its way.
type cancelling struct {
	Service
	cancel context.CancelFunc
}

func (c cancelling) Bulk(ctx context.Context, mode string, es []dpsservice.Enrollment) (*dpsservice.BulkResult, error) {
	if _, err := c.Service.Bulk(context.WithoutCancel(ctx), mode, es); err != nil {
		return nil, err
	}
	c.cancel()
	return nil, ctx.Err()
}

// A write the run was stopped during may have reached DPS: it is failed
// with its outcome unknown, not reported as never sent.
func TestEnrollStoppedDuringWrite(t *testing.T) {
	d := startDPS(t, dpsemu.Config{})
	ca := ekcerttest.NewCA(t)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	rep, err := Enroll(ctx, cancelling{d.svc, cancel}, []Record{record(t, "a", ca), record(t, "b", ca)}, Options{Verifier: verifier(t, ca), Workers: 1})
	if err == nil {
		t.Fatal("Enroll of a stopped run returned no error")
	}
	for _, r := range rep.Results {
		if r.Outcome != Failed || !strings.Contains(r.Error, "outcome unknown") {
			t.Errorf("%s: %s %q, want failed with the outcome unknown", r.RegistrationID, r.Outcome, r.Error)
		}
	}
	if n := len(d.all(t)); n != 2 {
		t.Errorf("DPS holds %d enrollments, want the 2 sent", n)
	}
}

// retrying is a Service that answers each call after one 429, telling the
// meter as dpsservice.Client does.
type retrying struct{ m *Meter }

func (r retrying) GetEnrollment(ctx context.Context, id string) (*dpsservice.Enrollment, error) {
	r.m.OnRetry(ctx, 429, 0)
	return &dpsservice.Enrollment{RegistrationID: id}, nil
}

func (r retrying) QueryPage(context.Context, string, int, string) ([]dpsservice.Enrollment, string, error) {
	return nil, "", nil
}

func (r retrying) PutEnrollment(context.Context, dpsservice.Enrollment, string) (*dpsservice.Enrollment, error) {
	return nil, nil
}
func (r retrying) DeleteEnrollment(context.Context, string, string) error { return nil }

func (r retrying) Bulk(ctx context.Context, _ string, _ []dpsservice.Enrollment) (*dpsservice.BulkResult, error) {
	r.m.OnRetry(ctx, 429, 0)
	return &dpsservice.BulkResult{IsSuccessful: true}, nil
}

// A request sent again is charged what it carries: one for a GET, the
// enrollments of a bulk operation; a budget under one bulk operation is
// refused.
func TestMeterRetryCharges(t *testing.T) {
	m, err := NewMeter(dpsservice.MaxBulk) // a bucket of 10, refilled at one a minute
	if err != nil {
		t.Fatal(err)
	}
	svc := metered{retrying{m}, m}
	if _, err := svc.GetEnrollment(t.Context(), "a"); err != nil {
		t.Fatal(err)
	}
	if got := m.lim.Tokens(); got < 7.9 || got > 8.1 {
		t.Errorf("after a GET sent twice: %.2f operations left of 10, want 8", got)
	}
	if _, err := svc.Bulk(t.Context(), dpsservice.BulkCreate, make([]dpsservice.Enrollment, 3)); err != nil {
		t.Fatal(err)
	}
	if got := m.lim.Tokens(); got < 1.9 || got > 2.1 {
		t.Errorf("after a bulk of 3 sent twice: %.2f operations left, want 2", got)
	}
	if ops, thr := m.Counts(); ops != 4 || thr != 2 {
		t.Errorf("counts %d operations, %d throttled; want 4, 2", ops, thr)
	}
	for _, n := range []int{-1, 1, dpsservice.MaxBulk - 1} {
		if _, err := NewMeter(n); err == nil || !strings.Contains(err.Error(), "bulk") {
			t.Errorf("NewMeter(%d) = %v, want an error", n, err)
		}
	}
}

// heldAs is a Service that holds enrollments DPS may hold and the
// emulator cannot: other attestation types.
type heldAs struct {
	Service
	held map[string]*dpsservice.Enrollment
}

func (h heldAs) GetEnrollment(ctx context.Context, id string) (*dpsservice.Enrollment, error) {
	if e, ok := h.held[id]; ok {
		c := *e
		return &c, nil
	}
	return h.Service.GetEnrollment(ctx, id)
}

// linked is a DPS linked to the hubs the tests name.
var linked = dpsemu.Config{Hubs: []dpsemu.Hub{{HostName: "h1.x"}, {HostName: "h2.x"}}}

// An update keeps what the run did not ask for: the allocation, the hubs,
// and the fields this tool does not model; an enrollment of another
// attestation type is neither overwritten, disabled nor deleted.
func TestEnrollKeepsWhatItDoesNotAsk(t *testing.T) {
	d := startDPS(t, linked)
	ca := ekcerttest.NewCA(t)
	rec := record(t, "press-1", ca)
	opts := Options{Verifier: verifier(t, ca), Settings: Settings{AllocationPolicy: dpsservice.AllocationStatic, IoTHubs: []string{"h1.x"}}}
	if _, err := Enroll(t.Context(), d.svc, []Record{rec}, opts); err != nil {
		t.Fatal(err)
	}
	e, err := d.svc.GetEnrollment(t.Context(), "press-1")
	if err != nil {
		t.Fatal(err)
	}
	info := json.RawMessage(`{"fields":{"line":"7"}}`)
	e.Extra = map[string]json.RawMessage{"optionalDeviceInformation": info}
	if _, err := d.svc.PutEnrollment(t.Context(), *e, e.ETag); err != nil {
		t.Fatal(err)
	}
	kept := func(when string) {
		t.Helper()
		e := d.all(t)["press-1"]
		if e.AllocationPolicy != dpsservice.AllocationStatic || strings.Join(e.IoTHubs, ",") != "h1.x" || string(e.Extra["optionalDeviceInformation"]) != string(info) {
			t.Errorf("%s: allocation %q, hubs %v, extra %s; want static, h1.x, %s", when, e.AllocationPolicy, e.IoTHubs, e.Extra, info)
		}
	}
	opts.Settings = Settings{Tags: map[string]json.RawMessage{"site": []byte(`"p7"`)}}
	rep, err := Enroll(t.Context(), d.svc, []Record{rec}, opts)
	if got := outcomes(rep)["press-1"]; err != nil || got != Updated {
		t.Fatalf("tag change: %s, %v", got, err)
	}
	kept("after a tag change")
	if rep, err := Disable(t.Context(), d.svc, []string{"press-1"}, Options{}); err != nil || rep.Totals[Disabled] != 1 {
		t.Fatalf("disable: %v, %v", rep.Totals, err)
	}
	kept("after disable")

	x509 := &dpsservice.Enrollment{RegistrationID: "cam-1", ETag: `"1"`, Attestation: dpsservice.Attestation{Type: "x509"}}
	svc := newSpy(heldAs{d.svc, map[string]*dpsservice.Enrollment{"cam-1": x509}})
	rep, err = Enroll(t.Context(), svc, []Record{record(t, "cam-1", ca)}, opts)
	if r := rep.Results[0]; err != nil || r.Outcome != Conflict || !strings.Contains(r.Error, "x509") || svc.calls != 0 {
		t.Errorf("enroll over an x509 enrollment: %+v, %d writes, %v", r, svc.calls, err)
	}
	for name, f := range map[string]func(context.Context, Service, []string, Options) (*Report, error){"disable": Disable, "delete": Delete} {
		rep, err := f(t.Context(), svc, []string{"cam-1"}, Options{})
		if r := rep.Results[0]; err != nil || r.Outcome != Refused || !strings.Contains(r.Error, "x509") || svc.calls != 0 {
			t.Errorf("%s of an x509 enrollment: %+v, %d writes, %v", name, r, svc.calls, err)
		}
	}
}

// A re-run that does not give the status, IoT Edge or the re-provisioning
// policy leaves them as they are: a device disabled since stays disabled.
// A new enrollment is an enabled IoT Edge device with DPS's re-provisioning
// policy.
func TestEnrollRerunLeavesStatus(t *testing.T) {
	d := startDPS(t, dpsemu.Config{})
	ca := ekcerttest.NewCA(t)
	recs := []Record{record(t, "a", ca), record(t, "b", ca)}
	opts := Options{Verifier: verifier(t, ca)}
	if _, err := Enroll(t.Context(), d.svc, recs, opts); err != nil {
		t.Fatal(err)
	}
	e := d.all(t)["a"]
	if e.ProvisioningStatus != dpsservice.StatusEnabled || e.Capabilities == nil || !e.Capabilities.IoTEdge {
		t.Errorf("created: status %q, capabilities %+v; want enabled, IoT Edge", e.ProvisioningStatus, e.Capabilities)
	}
	if _, err := Disable(t.Context(), d.svc, []string{"a"}, Options{}); err != nil {
		t.Fatal(err)
	}
	b, err := d.svc.GetEnrollment(t.Context(), "b")
	if err != nil {
		t.Fatal(err)
	}
	b.Capabilities, b.ReprovisionPolicy = &dpsservice.Capabilities{IoTEdge: false}, &dpsservice.ReprovisionPolicy{}
	if _, err := d.svc.PutEnrollment(t.Context(), *b, b.ETag); err != nil {
		t.Fatal(err)
	}
	rep, err := Enroll(t.Context(), d.svc, recs, opts)
	if err != nil || rep.Totals[Unchanged] != 2 {
		t.Fatalf("re-run: %v, %v", rep.Totals, err)
	}
	held := d.all(t)
	if held["a"].ProvisioningStatus != dpsservice.StatusDisabled {
		t.Error("a re-run re-enabled a disabled device")
	}
	if hb := held["b"]; hb.Capabilities.IoTEdge || *hb.ReprovisionPolicy != (dpsservice.ReprovisionPolicy{}) {
		t.Errorf("a re-run reset b: %+v, %+v", hb.Capabilities, hb.ReprovisionPolicy)
	}
	opts.Settings = Settings{ProvisioningStatus: dpsservice.StatusEnabled, IoTEdge: new(true)}
	rep, err = Enroll(t.Context(), d.svc, recs, opts)
	if err != nil || rep.Totals[Updated] != 2 {
		t.Fatalf("asking enabled and IoT Edge: %v, %v", rep.Totals, err)
	}
	held = d.all(t)
	if held["a"].ProvisioningStatus != dpsservice.StatusEnabled || !held["b"].Capabilities.IoTEdge || *held["b"].ReprovisionPolicy != (dpsservice.ReprovisionPolicy{}) {
		t.Errorf("after asking: a %s, b %+v %+v", held["a"].ProvisioningStatus, held["b"].Capabilities, held["b"].ReprovisionPolicy)
	}
}

// The tag tells a manufacturer's anchor from the operator's.
func TestCheckTag(t *testing.T) {
	for _, tc := range []struct {
		c    Check
		want string
	}{
		{Check{Verified: true, Manufacturer: "Infineon", Anchor: "Infineon_RSA_Root.pem"}, `{"ekVerified":true,"ekAnchor":"manufacturer","manufacturer":"Infineon"}`},
		{Check{Verified: true, Anchor: "CN=Plant CA", OperatorAnchor: true}, `{"ekVerified":true,"ekAnchor":"operator"}`},
		{Check{Problem: "no EK certificate"}, `{"ekVerified":false}`},
	} {
		if got := string(tc.c.tag()); got != tc.want {
			t.Errorf("tag of %+v = %s, want %s", tc.c, got, tc.want)
		}
	}
}

// Progress never goes backwards, however the workers' reports interleave.
func TestEnrollProgressInOrder(t *testing.T) {
	d := startDPS(t, dpsemu.Config{})
	var recs []Record
	for i := range 8 * dpsservice.MaxBulk {
		recs = append(recs, record(t, fmt.Sprintf("dev-%02d", i), nil))
	}
	var (
		mu   sync.Mutex
		seen []int
	)
	_, err := Enroll(t.Context(), d.svc, recs, Options{AllowUnverified: true, Workers: 8, Progress: func(done, total int) {
		if done%20 == 10 { // a slow terminal now and then
			time.Sleep(50 * time.Millisecond)
		}
		mu.Lock()
		seen = append(seen, done)
		mu.Unlock()
	}})
	if err != nil {
		t.Fatal(err)
	}
	for i := 1; i < len(seen); i++ {
		if seen[i] < seen[i-1] {
			t.Fatalf("progress went %v", seen)
		}
	}
}

// Hubs given without a policy leave the policy DPS holds when it fits
// them: a static assignment made by hand survives a re-run of the file
// that named the hub; more hubs than static takes make it hashed.
func TestEnrollHubsWithoutPolicy(t *testing.T) {
	d := startDPS(t, linked)
	ca := ekcerttest.NewCA(t)
	rec := record(t, "press-1", ca)
	opts := Options{Verifier: verifier(t, ca), Settings: Settings{IoTHubs: []string{"h1.x"}}}
	if _, err := Enroll(t.Context(), d.svc, []Record{rec}, opts); err != nil {
		t.Fatal(err)
	}
	if e := d.all(t)["press-1"]; e.AllocationPolicy != dpsservice.AllocationHashed {
		t.Errorf("created with a hub: policy %q, want hashed", e.AllocationPolicy)
	}
	e, err := d.svc.GetEnrollment(t.Context(), "press-1")
	if err != nil {
		t.Fatal(err)
	}
	e.AllocationPolicy = dpsservice.AllocationStatic
	if _, err := d.svc.PutEnrollment(t.Context(), *e, e.ETag); err != nil {
		t.Fatal(err)
	}
	rep, err := Enroll(t.Context(), d.svc, []Record{rec}, opts)
	if err != nil || rep.Totals[Unchanged] != 1 || d.all(t)["press-1"].AllocationPolicy != dpsservice.AllocationStatic {
		t.Errorf("re-run: %v, %v, policy %q; want unchanged static", rep.Totals, err, d.all(t)["press-1"].AllocationPolicy)
	}
	opts.Settings.IoTHubs = []string{"h1.x", "h2.x"}
	rep, err = Enroll(t.Context(), d.svc, []Record{rec}, opts)
	if got := d.all(t)["press-1"]; err != nil || rep.Totals[Updated] != 1 || got.AllocationPolicy != dpsservice.AllocationHashed || len(got.IoTHubs) != 2 {
		t.Errorf("two hubs over static: %v, %v, policy %q, hubs %v; want hashed over both", rep.Totals, err, got.AllocationPolicy, got.IoTHubs)
	}
}
