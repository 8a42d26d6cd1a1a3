package dpsemu

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/edgetpm/edgetpm/internal/dpsservice"
	"github.com/edgetpm/edgetpm/internal/sas"
	"github.com/edgetpm/edgetpm/internal/testharness/testclock"
)

const apiQuery = "?api-version=" + dpsservice.APIVersion

// inProcess is an emulator on a test clock called without a network, and
// a service token good for a day of that clock.
type inProcess struct {
	srv   *Server
	clock *testclock.Clock
	token string
}

func newInProcess(t testing.TB, cfg Config) *inProcess {
	t.Helper()
	c := testclock.New(time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC))
	cfg.Now = c.Now
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	cs := s.ConnectionString()
	tok, err := sas.New(t.Context(), sas.Key(cs.Key), cs.HostName, cs.KeyName, c.Now().Add(24*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	return &inProcess{srv: s, clock: c, token: tok}
}

// do sends a service request with headers given as name, value pairs.
func (p *inProcess) do(method, path string, body any, header ...string) *httptest.ResponseRecorder {
	var b []byte
	switch v := body.(type) {
	case nil:
	case string:
		b = []byte(v)
	default:
		b, _ = json.Marshal(v)
	}
	req := httptest.NewRequest(method, path, strings.NewReader(string(b)))
	req.Header.Set("Authorization", p.token)
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	w := httptest.NewRecorder()
	p.srv.ServeHTTP(w, req)
	return w
}

// tpmEnrollments returns n enrollments prefix-0, prefix-1, … with the EK ek.
func tpmEnrollments(prefix string, n int, ek []byte) []dpsservice.Enrollment {
	out := make([]dpsservice.Enrollment, n)
	for i := range out {
		out[i] = dpsservice.Enrollment{
			RegistrationID: fmt.Sprintf("%s-%d", prefix, i),
			Attestation:    dpsservice.Attestation{Type: "tpm", TPM: &dpsservice.TPMAttestation{EndorsementKey: ek}},
		}
	}
	return out
}

// wantError checks a whole-request refusal: status, errorCode and the
// DPS error body.
func wantError(t *testing.T, what string, w *httptest.ResponseRecorder, status, code int) {
	t.Helper()
	var body dpsservice.ErrorBody
	if w.Code != status || json.Unmarshal(w.Body.Bytes(), &body) != nil || body.ErrorCode != code || body.TrackingID == "" ||
		rawHeader(w, "x-ms-error-code") != strconv.Itoa(code) {
		t.Errorf("%s: HTTP %d %s, want %d with errorCode %d", what, w.Code, w.Body, status, code)
	}
}

// rawHeader returns the header the emulator set under exactly that
// (lowercase) name, as DPS spells it on the wire.
func rawHeader(w *httptest.ResponseRecorder, name string) string {
	if v := w.Header()[name]; len(v) == 1 {
		return v[0]
	}
	return ""
}

func TestLimiter(t *testing.T) {
	t0 := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	l := newLimiter(10, time.Minute)
	steps := []struct {
		at   time.Duration
		n    int
		wait time.Duration
	}{
		{0, 4, 0},
		{10 * time.Second, 6, 0},                // 10 in the window
		{20 * time.Second, 1, 40 * time.Second}, // until the first 4 leave at 60 s
		{59 * time.Second, 1, time.Second},
		{60 * time.Second, 4, 0},                // the first 4 left
		{60 * time.Second, 1, 10 * time.Second}, // the 6 of 10 s leave at 70 s
		{65 * time.Second, 7, 55 * time.Second}, // 7 need the 6 of 10 s and one of 60 s gone
		{70 * time.Second, 6, 0},                // exactly a window after 10 s: gone
		{70 * time.Second, 1, 50 * time.Second},
		{10 * time.Minute, 10, 0},
	}
	for _, s := range steps {
		if got := l.take(t0.Add(s.at), s.n); got != s.wait {
			t.Errorf("take(%v, %d) = %v, want %v", s.at, s.n, got, s.wait)
		}
	}
}

func TestNewRateLimit(t *testing.T) {
	for rate, ok := range map[int]bool{0: true, -1: true, dpsservice.MaxBulk: true, dpsservice.MaxBulk - 1: false, 1: false} {
		_, err := New(Config{ServiceOpsPerMinute: rate})
		if (err == nil) != ok {
			t.Errorf("New(ServiceOpsPerMinute: %d) = %v, want ok %v", rate, err, ok)
		}
	}
}

// A malformed bulk operation is refused whole, changes nothing and costs
// nothing against the rate limit.
func TestBulkRefused(t *testing.T) {
	ek, _, _ := keys(t)
	p := newInProcess(t, Config{ServiceOpsPerMinute: dpsservice.MaxBulk})
	two := tpmEnrollments("dev", 2, ek)
	dup := append(tpmEnrollments("dev", 2, ek), dpsservice.Enrollment{RegistrationID: "DEV-1", Attestation: two[0].Attestation})
	for name, body := range map[string]any{
		"not JSON":     "{",
		"array":        "[]",
		"no mode":      map[string]any{"enrollments": two},
		"bad mode":     dpsservice.BulkOperation{Mode: "upsert", Enrollments: two},
		"mode case":    dpsservice.BulkOperation{Mode: "Create", Enrollments: two},
		"none":         dpsservice.BulkOperation{Mode: dpsservice.BulkCreate},
		"empty":        map[string]any{"mode": "create", "enrollments": []any{}},
		"eleven":       dpsservice.BulkOperation{Mode: dpsservice.BulkCreate, Enrollments: tpmEnrollments("dev", dpsservice.MaxBulk+1, ek)},
		"duplicate":    dpsservice.BulkOperation{Mode: dpsservice.BulkUpdate, Enrollments: dup},
		"mode type":    `{"mode":1,"enrollments":[]}`,
		"enrollments":  `{"mode":"create","enrollments":{}}`,
		"twin":         `{"mode":"create","enrollments":[{"registrationId":"x","initialTwin":` + strings.Repeat("[", 300<<10) + `}]}`,
		"trailing":     `{"mode":"create","enrollments":[]} x`,
		"empty string": "",
	} {
		wantError(t, name, p.do("POST", "/enrollments"+apiQuery, body), http.StatusBadRequest, codeBadRequest)
	}
	w := p.do("GET", "/enrollments"+apiQuery, nil)
	wantError(t, "GET /enrollments", w, http.StatusMethodNotAllowed, codeMethod)
	if w.Header().Get("Allow") != "POST" {
		t.Errorf("Allow %q, want POST", w.Header().Get("Allow"))
	}
	wantError(t, "no api-version", p.do("POST", "/enrollments", dpsservice.BulkOperation{Mode: "create", Enrollments: two}), http.StatusBadRequest, codeBadRequest)
	if n := len(p.srv.st.Enrollments); n != 0 {
		t.Errorf("%d enrollments stored by refused operations", n)
	}
	// The whole allowance is still there.
	w = p.do("POST", "/enrollments"+apiQuery, dpsservice.BulkOperation{Mode: dpsservice.BulkCreate, Enrollments: tpmEnrollments("dev", dpsservice.MaxBulk, ek)})
	if w.Code != http.StatusOK {
		t.Fatalf("a full bulk after refusals: HTTP %d %s", w.Code, w.Body)
	}
}

// DPS allows 1,000 service operations a minute, a bulk operation costing
// one per enrollment: 10,000 enrollments take ten minutes of the test
// clock, and neither single requests nor bulk operations get past the
// limit.
func TestServiceThrottle(t *testing.T) {
	ek, _, _ := keys(t)
	p := newInProcess(t, Config{})
	bulk := func(mode string, es []dpsservice.Enrollment) *httptest.ResponseRecorder {
		return p.do("POST", "/enrollments"+apiQuery, dpsservice.BulkOperation{Mode: mode, Enrollments: es})
	}
	throttled := func(what string, w *httptest.ResponseRecorder, retryAfter int) {
		t.Helper()
		wantError(t, what, w, http.StatusTooManyRequests, codeThrottled)
		if got := w.Header()["retry-after"]; len(got) != 1 || got[0] != strconv.Itoa(retryAfter) {
			t.Errorf("%s: retry-after %q, want %d under that lowercase name", what, got, retryAfter)
		}
	}
	all := tpmEnrollments("dev", 10000, ek)
	for minute := range 10 {
		for i := 0; i < DefaultServiceOpsPerMinute; i += dpsservice.MaxBulk {
			es := all[minute*DefaultServiceOpsPerMinute+i:][:dpsservice.MaxBulk]
			if w := bulk(dpsservice.BulkCreate, es); w.Code != http.StatusOK || !strings.Contains(w.Body.String(), `"isSuccessful":true`) {
				t.Fatalf("minute %d, bulk %d: HTTP %d %s", minute, i/dpsservice.MaxBulk, w.Code, w.Body)
			}
		}
		// The minute's allowance is spent, all at one instant of the
		// test clock: everything waits the whole minute.
		throttled("PUT", p.do("PUT", "/enrollments/extra"+apiQuery, all[0]), 60)
		throttled("GET", p.do("GET", "/enrollments/dev-0"+apiQuery, nil), 60)
		throttled("query", p.do("POST", "/enrollments/query"+apiQuery, `{"query":"*"}`), 60)
		throttled("bulk", bulk(dpsservice.BulkDelete, all[:1]), 60)
		p.clock.Add(time.Minute)
	}
	if n := len(p.srv.st.Enrollments); n != len(all) {
		t.Fatalf("%d enrollments stored, want %d", n, len(all))
	}

	// Single requests spend the same allowance: 995 PUTs leave room for
	// five enrollments, not ten.
	for i := range DefaultServiceOpsPerMinute - 5 {
		if w := p.do("PUT", "/enrollments/dev-"+strconv.Itoa(i)+apiQuery, all[i]); w.Code != http.StatusOK {
			t.Fatalf("PUT %d: HTTP %d %s", i, w.Code, w.Body)
		}
	}
	p.clock.Add(30 * time.Second)
	throttled("bulk of 10 after 995", bulk(dpsservice.BulkDelete, all[:10]), 30)
	if w := bulk(dpsservice.BulkDelete, all[:5]); w.Code != http.StatusOK {
		t.Fatalf("bulk of 5 after 995: HTTP %d %s", w.Code, w.Body)
	}
	throttled("PUT after 1000", p.do("PUT", "/enrollments/dev-0"+apiQuery, all[0]), 30)
	if _, ok := p.srv.st.Enrollments["dev-9"]; !ok {
		t.Error("a throttled bulk delete deleted")
	}
	if _, ok := p.srv.st.Enrollments["dev-4"]; ok {
		t.Error("an admitted bulk delete did not delete")
	}
	p.clock.Add(30 * time.Second)
	if w := p.do("PUT", "/enrollments/dev-0"+apiQuery, all[0]); w.Code != http.StatusOK {
		t.Fatalf("PUT a minute after the PUTs: HTTP %d %s", w.Code, w.Body)
	}
}

// Faults injected on the service API hit the chosen request, leave the
// device API alone, and cost nothing against the rate limit.
func TestServiceFaults(t *testing.T) {
	ek, _, _ := keys(t)
	p := newInProcess(t, Config{ServiceOpsPerMinute: dpsservice.MaxBulk})
	p.srv.SetServiceFaults(Faults{Skip: 1, Throttle: 2, ThrottleRetryAfter: 7, ServerErrors: 1})
	es := tpmEnrollments("dev", 1, ek)
	get := func() *httptest.ResponseRecorder { return p.do("GET", "/enrollments/dev-0"+apiQuery, nil) }
	if w := p.do("PUT", "/enrollments/dev-0"+apiQuery, es[0]); w.Code != http.StatusOK {
		t.Fatalf("skipped request: HTTP %d %s", w.Code, w.Body)
	}
	wantError(t, "first fault", get(), http.StatusServiceUnavailable, codeUnavailable)
	for i := range 2 {
		w := get()
		wantError(t, "throttle fault", w, http.StatusTooManyRequests, codeThrottled)
		if got := w.Header()["retry-after"]; len(got) != 1 || got[0] != "7" {
			t.Errorf("throttle fault %d: retry-after %q, want 7", i, got)
		}
	}
	// Device API faults are separate.
	if w := call(p.srv, "PUT", "/"+p.srv.IDScope()+"/registrations/dev-0/register?api-version=2021-06-01", "", `{"registrationId":"dev-0"}`); w.Code == http.StatusTooManyRequests || w.Code == http.StatusServiceUnavailable {
		t.Errorf("device request after service faults: HTTP %d", w.Code)
	}
	// One PUT so far: nine more operations fit in the minute.
	for i := range dpsservice.MaxBulk - 1 {
		if w := get(); w.Code != http.StatusOK {
			t.Fatalf("GET %d after the faults: HTTP %d %s", i, w.Code, w.Body)
		}
	}
	if w := get(); w.Code != http.StatusTooManyRequests {
		t.Errorf("GET past the limit: HTTP %d", w.Code)
	}
}

func TestQueryRequests(t *testing.T) {
	ek, _, _ := keys(t)
	p := newInProcess(t, Config{ServiceOpsPerMinute: -1})
	for i := 0; i < 25; i += dpsservice.MaxBulk {
		es := tpmEnrollments("dev", 25, ek)[i:min(i+dpsservice.MaxBulk, 25)]
		if w := p.do("POST", "/enrollments"+apiQuery, dpsservice.BulkOperation{Mode: dpsservice.BulkCreate, Enrollments: es}); w.Code != http.StatusOK {
			t.Fatalf("bulk create: HTTP %d %s", w.Code, w.Body)
		}
	}
	q := func(query string, header ...string) *httptest.ResponseRecorder {
		return p.do("POST", "/enrollments/query"+apiQuery, map[string]string{"query": query}, header...)
	}
	w := q("select  *\n from ENROLLMENTS", "x-ms-max-item-count", "10")
	var page []dpsservice.Enrollment
	if w.Code != http.StatusOK || json.Unmarshal(w.Body.Bytes(), &page) != nil || len(page) != 10 {
		t.Fatalf("first page: HTTP %d %s", w.Code, w.Body)
	}
	if got := w.Header()["x-ms-item-type"]; len(got) != 1 || got[0] != "enrollment" {
		t.Errorf("x-ms-item-type %q, want enrollment", got)
	}
	if got := w.Header()["x-ms-max-item-count"]; len(got) != 1 || got[0] != "10" {
		t.Errorf("x-ms-max-item-count %q, want 10", got)
	}
	cont := w.Header()["x-ms-continuation"]
	if len(cont) != 1 || cont[0] == "" {
		t.Fatalf("x-ms-continuation %q on a first page of 25", cont)
	}
	w = q("*", "x-ms-max-item-count", "100", "x-ms-continuation", cont[0])
	if w.Code != http.StatusOK || json.Unmarshal(w.Body.Bytes(), &page) != nil || len(page) != 15 || len(w.Header()["x-ms-continuation"]) != 0 {
		t.Fatalf("last page: HTTP %d, %d items, continuation %q", w.Code, len(page), w.Header()["x-ms-continuation"])
	}
	if w = q("*", "x-ms-max-item-count", "5000"); rawHeader(w, "x-ms-max-item-count") != strconv.Itoa(maxPageSize) {
		t.Errorf("page size 5000 answered as %q, want %d", rawHeader(w, "x-ms-max-item-count"), maxPageSize)
	}
	if w = q("*"); rawHeader(w, "x-ms-max-item-count") != strconv.Itoa(defaultPageSize) {
		t.Errorf("default page size %q, want %d", rawHeader(w, "x-ms-max-item-count"), defaultPageSize)
	}
	for name, w := range map[string]*httptest.ResponseRecorder{
		"where":             q("SELECT * FROM enrollments WHERE x = 1"),
		"groups":            q("SELECT * FROM enrollmentGroups"),
		"empty":             q(""),
		"page size":         q("*", "x-ms-max-item-count", "ten"),
		"negative":          q("*", "x-ms-max-item-count", "-1"),
		"continuation":      q("*", "x-ms-continuation", "%%%"),
		"continuation text": q("*", "x-ms-continuation", "bm90IGFuIGlk IQ"),
		"body":              p.do("POST", "/enrollments/query"+apiQuery, "[1]"),
	} {
		wantError(t, name, w, http.StatusBadRequest, codeBadRequest)
	}
	// Other methods address an enrollment named "query".
	wantError(t, "GET /enrollments/query", p.do("GET", "/enrollments/query"+apiQuery, nil), http.StatusNotFound, codeNoEnrollment)
}

// Azure's Node.js service client posts a bulk operation to /enrollments/
// with a trailing slash (azure-iot-provisioning-service 1.11.2,
// runBulkEnrollmentOperation: path '/enrollments/' + '?api-version=…'), and
// its BulkEnrollmentOperationResult carries errors as an array, empty when
// isSuccessful (interfaces.d.ts): a client reading errors.length must not
// find it missing.
func TestBulkAsNodeSends(t *testing.T) {
	ek, _, _ := keys(t)
	p := newInProcess(t, Config{})
	w := p.do("POST", "/enrollments/"+apiQuery, dpsservice.BulkOperation{Mode: dpsservice.BulkCreate, Enrollments: tpmEnrollments("dev", 2, ek)},
		"Content-Type", "application/json; charset=utf-8", "Accept", "application/json")
	var res map[string]json.RawMessage
	if w.Code != http.StatusOK || json.Unmarshal(w.Body.Bytes(), &res) != nil || string(res["isSuccessful"]) != "true" || string(res["errors"]) != "[]" {
		t.Errorf("POST /enrollments/ = %d %s, want 200 with isSuccessful true and errors []", w.Code, w.Body)
	}
	if n := len(p.srv.st.Enrollments); n != 2 {
		t.Errorf("%d enrollments stored, want 2", n)
	}
	// The Node SDK's spelling of updateIfMatchETag.
	upd := tpmEnrollments("dev", 1, ek)
	upd[0].ETag = p.srv.st.Enrollments[regKey("dev-0")].ETag
	upd[0].ProvisioningStatus = dpsservice.StatusDisabled
	w = p.do("POST", "/enrollments/"+apiQuery, dpsservice.BulkOperation{Mode: "updateIfMatchEtag", Enrollments: upd})
	if w.Code != http.StatusOK || !strings.Contains(w.Body.String(), `"isSuccessful":true`) || p.srv.st.Enrollments[regKey("dev-0")].ProvisioningStatus != dpsservice.StatusDisabled {
		t.Errorf("mode updateIfMatchEtag = %d %s, want dev-0 updated", w.Code, w.Body)
	}
	if w := p.do("GET", "/enrollments/"+apiQuery, nil); w.Code != http.StatusMethodNotAllowed {
		t.Errorf("GET /enrollments/ = %d, want 405", w.Code)
	}
}
