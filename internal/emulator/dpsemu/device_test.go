package dpsemu

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edgetpm/edgetpm/internal/dpsservice"
	"github.com/edgetpm/edgetpm/internal/emulator/registry"
	"github.com/edgetpm/edgetpm/internal/sas"
	"github.com/edgetpm/edgetpm/internal/testharness/testclock"
)

func TestRegisterRejections(t *testing.T) {
	ek, srk, otherEK := keys(t)
	e := newEnv(t, Config{})
	scope := e.srv.IDScope()
	e.enroll(t, dpsservice.Enrollment{RegistrationID: "dev-1"}, ek)
	put := registerPath(scope, "dev-1", "2021-06-01")
	for _, tc := range []struct {
		name         string
		method, path string
		body         any
		status, code int
		message      string
	}{
		{"no enrollment", "PUT", registerPath(scope, "dev-2", "2021-06-01"), registerBody("dev-2", ek, srk, nil), 401, codeUnauthorized, "Unauthorized"},
		{"unknown scope", "PUT", registerPath("0ne00000000", "dev-1", "2021-06-01"), registerBody("dev-1", ek, srk, nil), 401, codeUnauthorized, "Unauthorized"},
		{"EK mismatch", "PUT", put, registerBody("dev-1", otherEK, srk, nil), 400, codeBadKey, "Endorsement key is invalid, or does not match the Enrollment."},
		{"EK not a TPM2B", "PUT", put, registerBody("dev-1", ek[2:], srk, nil), 400, codeBadKey, "Endorsement key is invalid, or does not match the Enrollment."},
		{"SRK garbage", "PUT", put, registerBody("dev-1", ek, []byte{0, 2, 1, 2}, nil), 400, codeBadKey, msgStorageRootKey},
		{"SRK missing", "PUT", put, registerBody("dev-1", ek, nil, nil), 400, codeBadKey, msgStorageRootKey},
		{"no tpm", "PUT", put, map[string]any{"registrationId": "dev-1"}, 400, codeBadRequest, ""},
		{"body ID differs", "PUT", put, registerBody("dev-9", ek, srk, nil), 400, codeBadRequest, ""},
		{"not JSON", "PUT", put, "{", 400, codeBadRequest, ""},
		{"no api-version", "PUT", "/" + scope + "/registrations/dev-1/register", registerBody("dev-1", ek, srk, nil), 400, codeBadRequest, ""},
		{"old api-version", "PUT", registerPath(scope, "dev-1", "2018-11-01"), registerBody("dev-1", ek, srk, nil), 400, codeBadRequest, ""},
		{"GET on register", "GET", put, nil, 405, codeMethod, ""},
		{"POST on operation", "POST", operationPath(scope, "dev-1", "4.x", "2021-06-01"), nil, 405, codeMethod, ""},
		{"unknown path", "GET", "/" + scope + "/devices/dev-1?api-version=2021-06-01", nil, 404, codeNotFound, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := e.device(t, tc.method, tc.path, "", tc.body)
			m := r.errorCode(t, tc.status, tc.code)
			if tc.message != "" && m["message"] != tc.message {
				t.Errorf("message %q, want %q", m["message"], tc.message)
			}
		})
	}
	e.srv.mu.Lock()
	n := len(e.srv.st.Challenges)
	e.srv.mu.Unlock()
	if n != 0 {
		t.Errorf("%d challenges stored by rejected requests", n)
	}
}

func TestAPIVersions(t *testing.T) {
	ek, srk, _ := keys(t)
	e := newEnv(t, Config{})
	scope := e.srv.IDScope()
	e.enroll(t, dpsservice.Enrollment{RegistrationID: "dev-1"}, ek)
	for _, v := range []string{"2019-03-31", "2021-06-01", "2021-10-01"} {
		r := e.device(t, "PUT", registerPath(scope, "dev-1", v)+"&forceRegistration=true", "", registerBody("dev-1", ek, srk, nil))
		if r.Status != http.StatusUnauthorized || r.json(t)["authenticationKey"] == nil {
			t.Errorf("api-version %s: %d %s, want a challenge", v, r.Status, r.Body)
		}
	}
	for _, v := range []string{"", "2017-08-31-preview", "2021-10-01x", "2025-07-01-preview"} {
		r := e.device(t, "PUT", registerPath(scope, "dev-1", v), "", registerBody("dev-1", ek, srk, nil))
		r.errorCode(t, http.StatusBadRequest, codeBadRequest)
	}
}

// Registration IDs are case-insensitive; the scope in the path is too.
func TestCaseInsensitiveIDs(t *testing.T) {
	ek, srk, _ := keys(t)
	e := newEnv(t, Config{})
	e.enroll(t, dpsservice.Enrollment{RegistrationID: "Dev-1"}, ek)
	r := e.device(t, "PUT", registerPath(strings.ToLower(e.srv.IDScope()), "dev-1", "2021-06-01"), "", registerBody("dev-1", ek, srk, nil))
	if r.Status != http.StatusUnauthorized || r.json(t)["authenticationKey"] == nil {
		t.Errorf("lowercased scope and ID: %d %s, want a challenge", r.Status, r.Body)
	}
}

func TestDisabledEnrollment(t *testing.T) {
	ek, srk, _ := keys(t)
	e := newEnv(t, Config{})
	e.enroll(t, dpsservice.Enrollment{RegistrationID: "dev-1", ProvisioningStatus: "disabled"}, ek)
	opID, token := e.softRegister(t, "dev-1", ek, srk, nil)
	r := e.poll(t, "dev-1", opID, token)
	if r.Status != http.StatusOK {
		t.Fatalf("poll: %d %s", r.Status, r.Body)
	}
	st, rs := result(t, r)
	if st != "disabled" || rs.Status != "disabled" || rs.ErrorCode != codeDisabled || rs.ErrorMessage == "" ||
		rs.TPM != nil || rs.AssignedHub != "" || rs.CreatedDateTimeUTC.IsZero() || rs.LastUpdatedDateTimeUTC.IsZero() || rs.ETag == "" {
		t.Errorf("disabled result: %s", r.Body)
	}
	if n := len(e.srv.Registry().List()); n != 0 {
		t.Errorf("a disabled enrollment created %d devices", n)
	}
}

func TestOperationLookup(t *testing.T) {
	ek, srk, _ := keys(t)
	e := newEnv(t, Config{})
	e.enroll(t, dpsservice.Enrollment{RegistrationID: "dev-1"}, ek)
	e.enroll(t, dpsservice.Enrollment{RegistrationID: "dev-2"}, ek)
	op1, tok1 := e.softRegister(t, "dev-1", ek, srk, nil)
	_, tok2 := e.softRegister(t, "dev-2", ek, srk, nil)
	// dev-2's token on dev-2's path, for dev-1's operation.
	e.poll(t, "dev-2", op1, tok2).errorCode(t, http.StatusNotFound, codeNoOperation)
	e.poll(t, "dev-1", "4.0000000000000000.00000000-0000-4000-8000-000000000000", tok1).errorCode(t, http.StatusNotFound, codeNoOperation)
	// dev-1's token does not open dev-2's path.
	e.poll(t, "dev-2", op1, tok1).errorCode(t, http.StatusUnauthorized, codeUnauthorized)
	// A new registration replaces the old operation.
	op1b, tok1b := e.softRegister(t, "dev-1", ek, srk, nil)
	e.poll(t, "dev-1", op1, tok1b).errorCode(t, http.StatusNotFound, codeNoOperation)
	if r := e.poll(t, "dev-1", op1b, tok1b); r.Status != http.StatusOK {
		t.Errorf("new operation: %d %s", r.Status, r.Body)
	}
}

func TestChallengeExpires(t *testing.T) {
	ek, srk, _ := keys(t)
	e := newEnv(t, Config{ChallengeTTL: time.Minute})
	scope := e.srv.IDScope()
	e.enroll(t, dpsservice.Enrollment{RegistrationID: "dev-1"}, ek)
	r := e.device(t, "PUT", registerPath(scope, "dev-1", "2021-06-01"), "", registerBody("dev-1", ek, srk, nil))
	if r.Status != http.StatusUnauthorized {
		t.Fatal(r.Status)
	}
	key := e.challengeKey(t, "dev-1")
	e.clock.Add(2 * time.Minute)
	token, err := sas.New(t.Context(), sas.Key(key), sas.DPSResource(scope, "dev-1"), "registration", e.clock.Now().Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	e.device(t, "PUT", registerPath(scope, "dev-1", "2021-06-01"), token, registerBody("dev-1", ek, srk, nil)).
		errorCode(t, http.StatusUnauthorized, codeUnauthorized)
}

// The authorised PUT may resend the keys; they must be the challenged ones.
func TestAuthorisedPutKeys(t *testing.T) {
	ek, srk, otherEK := keys(t)
	e := newEnv(t, Config{})
	scope := e.srv.IDScope()
	e.enroll(t, dpsservice.Enrollment{RegistrationID: "dev-1"}, ek)
	e.device(t, "PUT", registerPath(scope, "dev-1", "2021-06-01"), "", registerBody("dev-1", ek, srk, nil))
	token, err := sas.New(t.Context(), sas.Key(e.challengeKey(t, "dev-1")), sas.DPSResource(scope, "dev-1"), "registration", e.clock.Now().Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	path := registerPath(scope, "dev-1", "2021-06-01")
	e.device(t, "PUT", path, token, registerBody("dev-1", otherEK, srk, nil)).errorCode(t, http.StatusBadRequest, codeBadKey)
	e.device(t, "PUT", path, token, registerBody("dev-1", ek, otherEK, nil)).errorCode(t, http.StatusUnauthorized, codeUnauthorized)
	if r := e.device(t, "PUT", path, token, registerBody("dev-1", ek, srk, nil)); r.Status != http.StatusAccepted {
		t.Errorf("matching keys: %d %s", r.Status, r.Body)
	}
}

func TestAllocation(t *testing.T) {
	ek, srk, _ := keys(t)
	hubs := []Hub{
		{HostName: "hub-a.azure-devices.net", Latency: 50 * time.Millisecond},
		{HostName: "hub-b.azure-devices.net", Latency: 10 * time.Millisecond},
		{HostName: "hub-c.azure-devices.net", Latency: 30 * time.Millisecond},
	}
	for _, tc := range []struct {
		name     string
		policy   string // Config.Allocation
		hubs     []Hub
		enr      dpsservice.Enrollment
		wantHub  string
		wantCode int
	}{
		{"geoLatency", "", hubs, dpsservice.Enrollment{AllocationPolicy: "geoLatency"}, "hub-b.azure-devices.net", 0},
		{"geoLatency by default", "geoLatency", hubs, dpsservice.Enrollment{}, "hub-b.azure-devices.net", 0},
		{"geoLatency among iotHubs", "", hubs, dpsservice.Enrollment{AllocationPolicy: "geoLatency", IoTHubs: []string{"hub-a.azure-devices.net", "HUB-C.azure-devices.net"}}, "hub-c.azure-devices.net", 0},
		{"static", "", hubs, dpsservice.Enrollment{AllocationPolicy: "static", IoTHubHostName: "hub-a.azure-devices.net"}, "hub-a.azure-devices.net", 0},
		{"static by default", "static", hubs, dpsservice.Enrollment{IoTHubHostName: "HUB-C.azure-devices.net"}, "hub-c.azure-devices.net", 0},
		{"static, one hub, no name", "static", hubs[:1], dpsservice.Enrollment{}, "hub-a.azure-devices.net", 0},
		{"static without a name", "", hubs, dpsservice.Enrollment{AllocationPolicy: "static"}, "", codeHubNotLinked},
		{"static outside iotHubs", "", hubs, dpsservice.Enrollment{AllocationPolicy: "static", IoTHubHostName: "hub-a.azure-devices.net", IoTHubs: []string{"hub-b.azure-devices.net"}}, "", codeHubNotLinked},
		{"hashed among one", "", hubs, dpsservice.Enrollment{IoTHubs: []string{"hub-c.azure-devices.net"}}, "hub-c.azure-devices.net", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, Config{Hubs: tc.hubs, Allocation: tc.policy})
			tc.enr.RegistrationID = "dev-1"
			e.enroll(t, tc.enr, ek)
			opID, token := e.softRegister(t, "dev-1", ek, srk, nil)
			r := e.poll(t, "dev-1", opID, token)
			if r.Status != http.StatusOK {
				t.Fatalf("poll: %d %s", r.Status, r.Body)
			}
			st, rs := result(t, r)
			if tc.wantCode != 0 {
				if st != "failed" || rs.Status != "failed" || rs.ErrorCode != tc.wantCode || rs.ErrorMessage == "" || rs.TPM != nil {
					t.Errorf("result %s, want failed with errorCode %d", r.Body, tc.wantCode)
				}
				if n := len(e.srv.Registry().List()); n != 0 {
					t.Errorf("a failed registration created %d devices", n)
				}
				return
			}
			if st != "assigned" || rs.AssignedHub != tc.wantHub || rs.TPM == nil {
				t.Errorf("result %s, want assigned to %s", r.Body, tc.wantHub)
			}
			if _, ok := e.srv.Registry().Get(tc.wantHub, "dev-1"); !ok {
				t.Errorf("no device dev-1 on %s", tc.wantHub)
			}
		})
	}
}

// An enrollment written while its hub was linked, and kept in the state
// file after Config.Hubs dropped the hub, fails allocation with 400208;
// the service API refuses to write such an enrollment in the first place
// (TestEnrollmentHubNotLinked).
func TestAllocateUnlinked(t *testing.T) {
	linked := []Hub{{HostName: "hub-a.azure-devices.net"}, {HostName: "hub-b.azure-devices.net"}}
	for _, enr := range []dpsservice.Enrollment{
		{RegistrationID: "dev-1", AllocationPolicy: "static", IoTHubHostName: "nowhere.azure-devices.net"},
		{RegistrationID: "dev-1", IoTHubs: []string{"hub-a.azure-devices.net", "nowhere.azure-devices.net"}},
	} {
		if hub, err := allocate(&enr, linked, dpsservice.AllocationHashed, ""); err == nil || err.code != codeHubNotLinked {
			t.Errorf("allocate(%+v) = %q, %v; want errorCode %d", enr, hub, err, codeHubNotLinked)
		}
	}
}

// Hashed allocation is stable for a registration ID, spreads IDs over the
// hubs, and does not depend on the order hubs are linked in.
func TestHashedAllocation(t *testing.T) {
	ek, srk, _ := keys(t)
	hubs := []Hub{{HostName: "hub-a.azure-devices.net"}, {HostName: "hub-b.azure-devices.net"}, {HostName: "hub-c.azure-devices.net"}}
	assign := func(hubs []Hub) map[string]string {
		e := newEnv(t, Config{Hubs: hubs})
		got := map[string]string{}
		for i := range 12 {
			id := fmt.Sprint("dev-", i)
			e.enroll(t, dpsservice.Enrollment{RegistrationID: id}, ek)
			opID, token := e.softRegister(t, id, ek, srk, nil)
			_, rs := result(t, e.poll(t, id, opID, token))
			got[id] = rs.AssignedHub
		}
		return got
	}
	first := assign(hubs)
	reversed := assign([]Hub{hubs[2], hubs[1], hubs[0]})
	used := map[string]bool{}
	for id, hub := range first {
		used[hub] = true
		if reversed[id] != hub {
			t.Errorf("%s: %s, then %s with the hubs in another order", id, hub, reversed[id])
		}
	}
	if len(used) < 2 {
		t.Errorf("12 registrations all went to %v", used)
	}
}

func TestReprovisioning(t *testing.T) {
	ek, srk, _ := keys(t)
	hubA, hubB := "hub-a.azure-devices.net", "hub-b.azure-devices.net"
	for _, tc := range []struct {
		name          string
		policy        *dpsservice.ReprovisionPolicy
		wantHub, want string
	}{
		{"default policy migrates", nil, hubB, "deviceDataMigrated"},
		{"reset", &dpsservice.ReprovisionPolicy{UpdateHubAssignment: true, MigrateDeviceData: false}, hubB, "deviceDataReset"},
		{"no hub update", &dpsservice.ReprovisionPolicy{UpdateHubAssignment: false, MigrateDeviceData: true}, hubA, "initialAssignment"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, Config{Hubs: []Hub{{HostName: hubA}, {HostName: hubB}}, Allocation: "static"})
			e.enroll(t, dpsservice.Enrollment{RegistrationID: "dev-1", IoTHubHostName: hubA, ReprovisionPolicy: tc.policy}, ek)
			opID, token := e.softRegister(t, "dev-1", ek, srk, nil)
			if _, rs := result(t, e.poll(t, "dev-1", opID, token)); rs.AssignedHub != hubA || rs.Substatus != "initialAssignment" {
				t.Fatalf("first registration: %+v", rs)
			}
			cur, err := e.svc.GetEnrollment(t.Context(), "dev-1")
			if err != nil {
				t.Fatal(err)
			}
			cur.IoTHubHostName = hubB
			if _, err := e.svc.PutEnrollment(t.Context(), *cur, cur.ETag); err != nil {
				t.Fatal(err)
			}
			opID, token = e.softRegister(t, "dev-1", ek, srk, nil)
			_, rs := result(t, e.poll(t, "dev-1", opID, token))
			if rs.AssignedHub != tc.wantHub || rs.Substatus != tc.want {
				t.Errorf("second registration: hub %s substatus %s, want %s %s", rs.AssignedHub, rs.Substatus, tc.wantHub, tc.want)
			}
		})
	}
}

// A device that already exists on the hub keeps its key; DPS does not
// replace it.
func TestExistingDeviceKeepsKey(t *testing.T) {
	ek, srk, _ := keys(t)
	reg, err := registry.New("")
	if err != nil {
		t.Fatal(err)
	}
	key := []byte("0123456789abcdef0123456789abcdef")
	if err := reg.Put(registry.Device{Hub: DefaultHub, DeviceID: "edge-7", PrimaryKey: key}); err != nil {
		t.Fatal(err)
	}
	e := newEnv(t, Config{Registry: reg})
	e.enroll(t, dpsservice.Enrollment{RegistrationID: "dev-1", DeviceID: "edge-7"}, ek)
	opID, token := e.softRegister(t, "dev-1", ek, srk, nil)
	if _, rs := result(t, e.poll(t, "dev-1", opID, token)); rs.DeviceID != "edge-7" {
		t.Fatalf("deviceId %s, want edge-7", rs.DeviceID)
	}
	if d, _ := reg.Get(DefaultHub, "edge-7"); string(d.PrimaryKey) != string(key) {
		t.Error("the existing device's key was replaced")
	}
}

func TestFaults(t *testing.T) {
	ek, srk, _ := keys(t)
	e := newEnv(t, Config{RetryAfter: 4})
	scope := e.srv.IDScope()
	e.enroll(t, dpsservice.Enrollment{RegistrationID: "dev-1"}, ek)
	path := registerPath(scope, "dev-1", "2021-06-01")
	body := registerBody("dev-1", ek, srk, nil)
	challenges := func() int {
		e.srv.mu.Lock()
		defer e.srv.mu.Unlock()
		return len(e.srv.st.Challenges)
	}

	e.srv.SetFaults(Faults{Throttle: 2, ThrottleRetryAfter: 7})
	for range 2 {
		r := e.device(t, "PUT", path, "", body)
		r.errorCode(t, http.StatusTooManyRequests, codeThrottled)
		if !r.hasHeader("retry-after", "7") {
			t.Errorf("429 without retry-after: 7:\n%s", r.RawHeader)
		}
	}
	e.srv.SetFaults(Faults{Throttle: 1})
	if r := e.device(t, "PUT", path, "", body); r.Status != 429 || !r.hasHeader("retry-after", "4") {
		t.Errorf("throttle without its own retry-after: %d\n%s", r.Status, r.RawHeader)
	}
	e.srv.SetFaults(Faults{ServerErrors: 1})
	e.device(t, "PUT", path, "", body).errorCode(t, http.StatusServiceUnavailable, codeUnavailable)
	e.srv.SetFaults(Faults{Resets: 1})
	if r, err := e.deviceTry(t.Context(), "PUT", path, "", body); err == nil {
		t.Errorf("reset fault: got a response %d %s", r.Status, r.Body)
	}
	if n := challenges(); n != 0 {
		t.Errorf("faulted requests stored %d challenges", n)
	}
	// Faults are used up; the next request goes through.
	if r := e.device(t, "PUT", path, "", body); r.Status != http.StatusUnauthorized || r.json(t)["authenticationKey"] == nil {
		t.Errorf("after the faults: %d %s, want a challenge", r.Status, r.Body)
	}
	// Faults do not touch the service API.
	e.srv.SetFaults(Faults{ServerErrors: 1})
	if _, err := e.svc.GetEnrollment(t.Context(), "dev-1"); err != nil {
		t.Errorf("service API under a device fault: %v", err)
	}
}

// A reset on the poll leaves the operation as it was.
func TestResetOnPoll(t *testing.T) {
	ek, srk, _ := keys(t)
	e := newEnv(t, Config{})
	e.enroll(t, dpsservice.Enrollment{RegistrationID: "dev-1"}, ek)
	opID, token := e.softRegister(t, "dev-1", ek, srk, nil)
	e.srv.SetFaults(Faults{Resets: 1})
	if _, err := e.deviceTry(t.Context(), "GET", operationPath(e.srv.IDScope(), "dev-1", opID, "2021-06-01"), token, nil); err == nil {
		t.Error("reset fault on poll: got a response")
	}
	if n := len(e.srv.Registry().List()); n != 0 {
		t.Errorf("a reset poll assigned the device (%d devices)", n)
	}
	if r := e.poll(t, "dev-1", opID, token); r.Status != http.StatusOK {
		t.Errorf("poll after the reset: %d %s", r.Status, r.Body)
	}
}

func TestPersistence(t *testing.T) {
	ek, srk, _ := keys(t)
	dir := t.TempDir()
	file := filepath.Join(dir, "dps.json")
	reg, err := registry.New(filepath.Join(dir, "registry.json"))
	if err != nil {
		t.Fatal(err)
	}
	c := testclock.New(time.Now().UTC())
	srv, err := New(Config{StateFile: file, Registry: reg, Now: c.Now})
	if err != nil {
		t.Fatal(err)
	}
	e := serveEnv(t, srv, c)
	e.enroll(t, dpsservice.Enrollment{RegistrationID: "dev-1"}, ek)
	e.enroll(t, dpsservice.Enrollment{RegistrationID: "dev-2"}, ek)
	op1, tok1 := e.softRegister(t, "dev-1", ek, srk, nil)
	if r := e.poll(t, "dev-1", op1, tok1); r.Status != http.StatusOK {
		t.Fatalf("poll: %d %s", r.Status, r.Body)
	}
	first := e.poll(t, "dev-1", op1, tok1)
	e.device(t, "PUT", registerPath(srv.IDScope(), "dev-2", "2021-06-01"), "", registerBody("dev-2", ek, srk, nil))
	key2 := e.challengeKey(t, "dev-2")

	fi, err := os.Stat(file)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("state file mode %v, want 0600", fi.Mode().Perm())
	}

	reg2, err := registry.New(filepath.Join(dir, "registry.json"))
	if err != nil {
		t.Fatal(err)
	}
	srv2, err := New(Config{StateFile: file, Registry: reg2, Now: c.Now})
	if err != nil {
		t.Fatal(err)
	}
	e2 := serveEnv(t, srv2, c)
	if srv2.IDScope() != srv.IDScope() || srv2.ConnectionString().ConnectionString() != srv.ConnectionString().ConnectionString() {
		t.Error("scope or service key changed across a restart")
	}
	// The old service client still works: same key.
	e2.svc.Conn = srv.ConnectionString()
	if _, err := e2.svc.GetEnrollment(t.Context(), "dev-2"); err != nil {
		t.Errorf("enrollment after restart: %v", err)
	}
	// The finished operation answers the same.
	if r := e2.poll(t, "dev-1", op1, tok1); r.Status != http.StatusOK || string(r.Body) != string(first.Body) {
		t.Errorf("operation after restart: %d %s", r.Status, r.Body)
	}
	// The pending challenge still verifies.
	tok2, err := sas.New(t.Context(), sas.Key(key2), sas.DPSResource(srv.IDScope(), "dev-2"), "registration", c.Now().Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if r := e2.device(t, "PUT", registerPath(srv.IDScope(), "dev-2", "2021-06-01"), tok2, registerBody("dev-2", ek, srk, nil)); r.Status != http.StatusAccepted {
		t.Errorf("challenge after restart: %d %s", r.Status, r.Body)
	}
	if _, ok := reg2.Get(DefaultHub, "dev-1"); !ok {
		t.Error("registry lost dev-1 across a restart")
	}

	// The file's identity wins over nothing, and contradicting it fails.
	if _, err := New(Config{StateFile: file, IDScope: "0ne99999999"}); err == nil {
		t.Error("New with another ID scope than the state file succeeded")
	}
	if _, err := New(Config{StateFile: file, ServiceKey: []byte("another key")}); err == nil || strings.Contains(err.Error(), "another key") {
		t.Errorf("New with another service key = %v, want an error without the key", err)
	}
	if _, err := New(Config{StateFile: file, IDScope: srv.IDScope()}); err != nil {
		t.Errorf("New with the same scope: %v", err)
	}
}

func TestNewRejectsBadConfig(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.json")
	if err := os.WriteFile(bad, []byte("{"), 0o600); err != nil {
		t.Fatal(err)
	}
	for name, cfg := range map[string]Config{
		"policy":    {Allocation: "custom"},
		"hub":       {Hubs: []Hub{{HostName: "https://hub"}}},
		"hub twice": {Hubs: []Hub{{HostName: "a.net"}, {HostName: "A.net"}}},
		// Names go into connection strings, which sas.ParsePolicy reads
		// back only with a DNS name in them.
		"hub not DNS":     {Hubs: []Hub{{HostName: "x\n1.2.3.4\vexample.com"}}},
		"service not DNS": {ServiceHostName: "lab_dps.example"},
		"scope":           {IDScope: "0ne/1"},
		"state file":      {StateFile: bad},
		"no folder":       {StateFile: filepath.Join(dir, "missing", "dps.json")},
	} {
		if _, err := New(cfg); err == nil {
			t.Errorf("%s: New succeeded", name)
		}
	}
}

func TestDefaults(t *testing.T) {
	s, err := New(Config{})
	if err != nil {
		t.Fatal(err)
	}
	if len(s.IDScope()) != 11 || !strings.HasPrefix(s.IDScope(), "0ne") || strings.ToUpper(s.IDScope()[3:]) != s.IDScope()[3:] {
		t.Errorf("IDScope() = %q, want 0ne and 8 uppercase hex digits", s.IDScope())
	}
	cs := s.ConnectionString()
	if cs.HostName != DefaultServiceHostName || cs.KeyName != "provisioningserviceowner" || len(cs.Key) != 32 {
		t.Errorf("ConnectionString() = %s %s %d-byte key", cs.HostName, cs.KeyName, len(cs.Key))
	}
	if s.Registry() == nil {
		t.Error("no registry")
	}
	if other, _ := New(Config{}); other.IDScope() == s.IDScope() {
		t.Error("two emulators got the same ID scope")
	}
}

// Registrations of many devices at once, for the race detector.
func TestConcurrentRegistrations(t *testing.T) {
	ek, srk, _ := keys(t)
	e := newEnv(t, Config{})
	const n = 8
	for i := range n {
		e.enroll(t, dpsservice.Enrollment{RegistrationID: fmt.Sprint("dev-", i)}, ek)
	}
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Go(func() {
			id := fmt.Sprint("dev-", i)
			r, err := e.deviceTry(t.Context(), "PUT", registerPath(e.srv.IDScope(), id, "2021-10-01"), "", registerBody(id, ek, srk, nil))
			if err == nil && r.Status != http.StatusUnauthorized {
				err = fmt.Errorf("%s: status %d", id, r.Status)
			}
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	for i := range n {
		id := fmt.Sprint("dev-", i)
		opID, token := e.softRegister(t, id, ek, srk, nil)
		if r := e.poll(t, id, opID, token); r.Status != http.StatusOK {
			t.Errorf("%s: %d", id, r.Status)
		}
	}
	if got := len(e.srv.Registry().List()); got != n {
		t.Errorf("%d devices, want %d", got, n)
	}
}
