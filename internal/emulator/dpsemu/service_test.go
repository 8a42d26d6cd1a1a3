package dpsemu

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/go-tpm/tpm2"

	"github.com/edgetpm/edgetpm/internal/dpsservice"
	"github.com/edgetpm/edgetpm/internal/sas"
)

// serviceError asserts err is a DPS error with status and code.
func serviceError(t *testing.T, what string, err error, status, code int) {
	t.Helper()
	var se *dpsservice.ServiceError
	if !errors.As(err, &se) {
		t.Errorf("%s: %v, want a ServiceError %d", what, err, status)
		return
	}
	if se.HTTPStatus != status || se.Code != code || se.TrackingID == "" {
		t.Errorf("%s: HTTP %d code %d tracking %q, want %d %d", what, se.HTTPStatus, se.Code, se.TrackingID, status, code)
	}
}

func TestEnrollmentCRUD(t *testing.T) {
	ek, _, otherEK := keys(t)
	e := newEnv(t, Config{})
	ctx := t.Context()
	twin := []byte(`{"tags":{"site":"lab"},"properties":{"desired":{"interval":5}}}`)
	in := dpsservice.Enrollment{
		RegistrationID:    "dev-1",
		DeviceID:          "edge-1",
		Attestation:       dpsservice.Attestation{Type: "tpm", TPM: &dpsservice.TPMAttestation{EndorsementKey: ek}},
		IoTHubHostName:    DefaultHub,
		Capabilities:      &dpsservice.Capabilities{IoTEdge: true},
		InitialTwin:       twin,
		ReprovisionPolicy: &dpsservice.ReprovisionPolicy{UpdateHubAssignment: true, MigrateDeviceData: true},
		AllocationPolicy:  "static",
		// Service-owned fields are ignored on writes.
		ETag:              `"client-made"`,
		RegistrationState: &dpsservice.RegistrationState{RegistrationID: "dev-1", Status: "assigned"},
	}
	created, err := e.svc.PutEnrollment(ctx, in, "")
	if err != nil {
		t.Fatal(err)
	}
	if created.ProvisioningStatus != "enabled" || created.ETag == "" || created.ETag == in.ETag || !strings.HasPrefix(created.ETag, `"`) ||
		created.CreatedDateTimeUTC.IsZero() || !created.LastUpdatedDateTimeUTC.Equal(created.CreatedDateTimeUTC) || created.RegistrationState != nil {
		t.Errorf("created = %+v", created)
	}
	if created.DeviceID != "edge-1" || !bytes.Equal(created.Attestation.TPM.EndorsementKey, ek) || !created.Capabilities.IoTEdge ||
		string(created.InitialTwin) != string(twin) || created.AllocationPolicy != "static" {
		t.Errorf("created does not echo the request: %+v", created)
	}

	got, err := e.svc.GetEnrollment(ctx, "DEV-1")
	if err != nil {
		t.Fatal(err)
	}
	if got.ETag != created.ETag || got.RegistrationID != "dev-1" {
		t.Errorf("GET = %+v, want the stored enrollment", got)
	}

	// If-Match: the current ETag, "*", a stale one, and a bare (unquoted)
	// current one.
	e.clock.Add(time.Second)
	in.ProvisioningStatus = "disabled"
	updated, err := e.svc.PutEnrollment(ctx, in, created.ETag)
	if err != nil {
		t.Fatal(err)
	}
	if updated.ETag == created.ETag || !updated.CreatedDateTimeUTC.Equal(created.CreatedDateTimeUTC) ||
		!updated.LastUpdatedDateTimeUTC.After(created.LastUpdatedDateTimeUTC) || updated.ProvisioningStatus != "disabled" {
		t.Errorf("updated = %+v", updated)
	}
	_, err = e.svc.PutEnrollment(ctx, in, created.ETag)
	serviceError(t, "PUT with a stale ETag", err, http.StatusPreconditionFailed, codePrecondition)
	if _, err := e.svc.PutEnrollment(ctx, in, "*"); err != nil {
		t.Errorf("PUT with If-Match *: %v", err)
	}
	cur, _ := e.svc.GetEnrollment(ctx, "dev-1")
	if _, err := e.svc.PutEnrollment(ctx, in, strings.Trim(cur.ETag, `"`)); err != nil {
		t.Errorf("PUT with the unquoted ETag: %v", err)
	}
	_, err = e.svc.PutEnrollment(ctx, dpsservice.Enrollment{RegistrationID: "dev-new", Attestation: in.Attestation}, "*")
	serviceError(t, "PUT of a new enrollment with If-Match", err, http.StatusPreconditionFailed, codePrecondition)

	// A new EK voids the pending challenge.
	e.device(t, "PUT", registerPath(e.srv.IDScope(), "dev-1", "2021-06-01"), "", registerBody("dev-1", ek, mustSRK(t), nil))
	in.Attestation.TPM.EndorsementKey = otherEK
	if _, err := e.svc.PutEnrollment(ctx, in, ""); err != nil {
		t.Fatal(err)
	}
	e.srv.mu.Lock()
	pending := e.srv.st.Challenges["dev-1"]
	e.srv.mu.Unlock()
	if pending != nil {
		t.Error("the challenge for the old EK survived an EK change")
	}

	cur, _ = e.svc.GetEnrollment(ctx, "dev-1")
	serviceError(t, "DELETE with a stale ETag", e.svc.DeleteEnrollment(ctx, "dev-1", created.ETag), http.StatusPreconditionFailed, codePrecondition)
	if err := e.svc.DeleteEnrollment(ctx, "dev-1", cur.ETag); err != nil {
		t.Fatal(err)
	}
	_, err = e.svc.GetEnrollment(ctx, "dev-1")
	serviceError(t, "GET after DELETE", err, http.StatusNotFound, codeNoEnrollment)
	serviceError(t, "DELETE again", e.svc.DeleteEnrollment(ctx, "dev-1", ""), http.StatusNotFound, codeNoEnrollment)
}

func mustSRK(t *testing.T) []byte {
	_, srk, _ := keys(t)
	return srk
}

func TestEnrollmentValidation(t *testing.T) {
	ek, _, _ := keys(t)
	e := newEnv(t, Config{})
	eccEK := tpm2.Marshal(tpm2.New2B(tpm2.ECCEKTemplate))
	signing := tpm2.RSAEKTemplate
	signing.ObjectAttributes.Restricted = false
	tpmAtt := func(ek []byte) dpsservice.Attestation {
		return dpsservice.Attestation{Type: "tpm", TPM: &dpsservice.TPMAttestation{EndorsementKey: ek}}
	}
	for _, tc := range []struct {
		name string
		enr  dpsservice.Enrollment
		code int
	}{
		{"EK garbage", dpsservice.Enrollment{Attestation: tpmAtt([]byte("garbage"))}, codeBadKey},
		{"EK without size prefix", dpsservice.Enrollment{Attestation: tpmAtt(ek[2:])}, codeBadKey},
		{"EK is ECC", dpsservice.Enrollment{Attestation: tpmAtt(eccEK)}, codeBadKey},
		{"EK not restricted", dpsservice.Enrollment{Attestation: tpmAtt(tpm2.Marshal(tpm2.New2B(signing)))}, codeBadKey},
		{"no tpm", dpsservice.Enrollment{Attestation: dpsservice.Attestation{Type: "tpm"}}, codeBadKey},
		{"SRK garbage", dpsservice.Enrollment{Attestation: dpsservice.Attestation{Type: "tpm", TPM: &dpsservice.TPMAttestation{EndorsementKey: ek, StorageRootKey: []byte{1}}}}, codeBadKey},
		{"symmetric key", dpsservice.Enrollment{Attestation: dpsservice.Attestation{Type: "symmetricKey"}}, codeBadRequest},
		{"status", dpsservice.Enrollment{Attestation: tpmAtt(ek), ProvisioningStatus: "paused"}, codeBadRequest},
		{"policy", dpsservice.Enrollment{Attestation: tpmAtt(ek), AllocationPolicy: "custom"}, codeBadRequest},
		{"hub", dpsservice.Enrollment{Attestation: tpmAtt(ek), IoTHubs: []string{"https://hub"}}, codeBadRequest},
		{"device ID", dpsservice.Enrollment{Attestation: tpmAtt(ek), DeviceID: "a/b"}, codeBadRequest},
		{"twin not an object", dpsservice.Enrollment{Attestation: tpmAtt(ek), InitialTwin: []byte(`[1]`)}, codeBadRequest},
	} {
		tc.enr.RegistrationID = "dev-1"
		_, err := e.svc.PutEnrollment(t.Context(), tc.enr, "")
		serviceError(t, tc.name, err, http.StatusBadRequest, tc.code)
	}
	// The body's ID must be the path's; an empty one takes the path's.
	raw := func(id, body string) int {
		t.Helper()
		req, _ := http.NewRequestWithContext(t.Context(), "PUT", e.ts.URL+"/enrollments/"+id+"?api-version=2021-10-01", strings.NewReader(body))
		tok, _ := sas.New(t.Context(), sas.Key(e.srv.ConnectionString().Key), DefaultServiceHostName, "provisioningserviceowner", e.clock.Now().Add(time.Hour))
		req.Header.Set("Authorization", tok)
		resp, err := e.ts.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	att := `"attestation":{"type":"tpm","tpm":{"endorsementKey":"` + b64(ek) + `"}}`
	for _, tc := range []struct {
		id, body string
		want     int
	}{
		{"dev-2", `{"registrationId":"dev-3",` + att + `}`, 400},
		{"dev-2", `{` + att + `}`, 200},
		{"dev%202", `{` + att + `}`, 400},
		{strings.Repeat("a", 129), `{` + att + `}`, 400},
		{"dev-4", `{`, 400},
		{"dev-4", `{"registrationId":"dev-4","attestation":{"type":"tpm","tpm":{"endorsementKey":"!!"}}}`, 400},
	} {
		if got := raw(tc.id, tc.body); got != tc.want {
			t.Errorf("PUT /enrollments/%.20s %.40s: %d, want %d", tc.id, tc.body, got, tc.want)
		}
	}
	if _, err := e.svc.GetEnrollment(t.Context(), "dev-2"); err != nil {
		t.Errorf("enrollment created with the path's ID: %v", err)
	}
}

func b64(b []byte) string { return base64.StdEncoding.EncodeToString(b) }

func TestServiceAuth(t *testing.T) {
	e := newEnv(t, Config{})
	good := e.srv.ConnectionString()
	otherKey := make([]byte, 32)
	rand.Read(otherKey)
	for _, tc := range []struct {
		name string
		conn dpsservice.ConnectionString
		now  func() time.Time
	}{
		{"wrong key", dpsservice.ConnectionString{HostName: good.HostName, KeyName: good.KeyName, Key: otherKey}, nil},
		{"wrong key name", dpsservice.ConnectionString{HostName: good.HostName, KeyName: "enrollmentread", Key: good.Key}, nil},
		{"wrong audience", dpsservice.ConnectionString{HostName: "other-dps.azure-devices-provisioning.net", KeyName: good.KeyName, Key: good.Key}, nil},
		{"expired", good, func() time.Time { return e.clock.Now().Add(-2 * time.Hour) }},
	} {
		c := &dpsservice.Client{Conn: tc.conn, Endpoint: e.ts.URL, HTTP: e.ts.Client(), Now: tc.now}
		_, err := c.GetEnrollment(t.Context(), "dev-1")
		serviceError(t, tc.name, err, http.StatusUnauthorized, codeUnauthorized)
		if err != nil && strings.Contains(err.Error(), "sig=") {
			t.Errorf("%s: error echoes the token: %v", tc.name, err)
		}
	}
	for _, tc := range []struct {
		name, query, auth string
		status            int
	}{
		{"no Authorization", "?api-version=2021-10-01", "", 401},
		{"not SAS", "?api-version=2021-10-01", "Basic Zm9vOmJhcg==", 401},
		{"no api-version", "", "", 400},
	} {
		req, _ := http.NewRequestWithContext(t.Context(), "GET", e.ts.URL+"/enrollments/dev-1"+tc.query, nil)
		if tc.auth != "" {
			req.Header.Set("Authorization", tc.auth)
		}
		resp, err := e.ts.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if se := dpsservice.ParseError(resp.StatusCode, body); se.HTTPStatus != tc.status || se.Code == 0 {
			t.Errorf("%s: %d %s, want %d with an errorCode", tc.name, resp.StatusCode, body, tc.status)
		}
	}
	// Methods other than GET, PUT and DELETE.
	req, _ := http.NewRequestWithContext(t.Context(), "PATCH", e.ts.URL+"/enrollments/dev-1?api-version=2021-10-01", nil)
	tok, _ := sas.New(t.Context(), sas.Key(good.Key), good.HostName, good.KeyName, e.clock.Now().Add(time.Hour))
	req.Header.Set("Authorization", tok)
	resp, err := e.ts.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("PATCH: %d, want 405", resp.StatusCode)
	}
}

// An enrollment naming an IoT hub not linked to the DPS instance is
// refused with 400 when written, by a single PUT and per enrollment in a
// bulk operation, as DPS refuses it.
func TestEnrollmentHubNotLinked(t *testing.T) {
	ek, _, _ := keys(t)
	p := newInProcess(t, Config{Hubs: []Hub{{HostName: "hub-a.azure-devices.net"}, {HostName: "hub-b.azure-devices.net"}}})
	enr := func(id string, f func(*dpsservice.Enrollment)) dpsservice.Enrollment {
		e := tpmEnrollments(id, 1, ek)[0]
		e.RegistrationID = id
		f(&e)
		return e
	}
	for _, tc := range []struct {
		name string
		enr  dpsservice.Enrollment
		want int
	}{
		{"iotHubs with an unlinked hub", enr("d1", func(e *dpsservice.Enrollment) {
			e.IoTHubs = []string{"hub-a.azure-devices.net", "nowhere.azure-devices.net"}
		}), http.StatusBadRequest},
		{"iotHubHostName unlinked", enr("d2", func(e *dpsservice.Enrollment) {
			e.AllocationPolicy, e.IoTHubHostName = "static", "nowhere.azure-devices.net"
		}), http.StatusBadRequest},
		{"linked, other case", enr("d3", func(e *dpsservice.Enrollment) {
			e.IoTHubs = []string{"HUB-B.azure-devices.net"}
		}), http.StatusOK},
	} {
		w := p.do("PUT", "/enrollments/"+tc.enr.RegistrationID+apiQuery, tc.enr)
		if tc.want != http.StatusOK {
			wantError(t, tc.name, w, tc.want, codeBadRequest)
			if !strings.Contains(w.Body.String(), "nowhere.azure-devices.net") || !strings.Contains(w.Body.String(), "not linked") {
				t.Errorf("%s: body %s, want the hub named as not linked", tc.name, w.Body)
			}
			if g := p.do("GET", "/enrollments/"+tc.enr.RegistrationID+apiQuery, nil); g.Code != http.StatusNotFound {
				t.Errorf("%s: GET after the refusal = %d, want 404", tc.name, g.Code)
			}
		} else if w.Code != tc.want {
			t.Errorf("%s: PUT = %d %s, want %d", tc.name, w.Code, w.Body, tc.want)
		}
	}

	ops := []dpsservice.Enrollment{
		enr("bulk-ok", func(e *dpsservice.Enrollment) { e.IoTHubs = []string{"hub-a.azure-devices.net"} }),
		enr("bulk-bad", func(e *dpsservice.Enrollment) { e.IoTHubs = []string{"nowhere.azure-devices.net"} }),
	}
	w := p.do("POST", "/enrollments"+apiQuery, dpsservice.BulkOperation{Mode: dpsservice.BulkCreate, Enrollments: ops})
	var res dpsservice.BulkResult
	if w.Code != http.StatusOK || json.Unmarshal(w.Body.Bytes(), &res) != nil {
		t.Fatalf("bulk create = %d %s, want 200 with a result", w.Code, w.Body)
	}
	if res.IsSuccessful || len(res.Errors) != 1 || res.Errors[0].RegistrationID != "bulk-bad" || res.Errors[0].ErrorCode != codeBadRequest ||
		!strings.Contains(res.Errors[0].ErrorStatus, "not linked") {
		t.Errorf("bulk create result %s, want one error, for bulk-bad, %d, not linked", w.Body, codeBadRequest)
	}
	if g := p.do("GET", "/enrollments/bulk-ok"+apiQuery, nil); g.Code != http.StatusOK {
		t.Errorf("GET bulk-ok = %d, want 200", g.Code)
	}
	if g := p.do("GET", "/enrollments/bulk-bad"+apiQuery, nil); g.Code != http.StatusNotFound {
		t.Errorf("GET bulk-bad = %d, want 404", g.Code)
	}
}
