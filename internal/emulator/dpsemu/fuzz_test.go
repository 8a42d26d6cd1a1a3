package dpsemu

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/edgetpm/edgetpm/internal/dpsservice"
	"github.com/edgetpm/edgetpm/internal/sas"
)

// fuzzServer is an emulator with one enrollment, called in process.
func fuzzServer(f *testing.F) (*Server, []byte, []byte) {
	ek, srk, _ := keys(f)
	s, err := New(Config{})
	if err != nil {
		f.Fatal(err)
	}
	s.st.Enrollments["dev-1"] = &dpsservice.Enrollment{
		RegistrationID:     "dev-1",
		Attestation:        dpsservice.Attestation{Type: "tpm", TPM: &dpsservice.TPMAttestation{EndorsementKey: ek}},
		ProvisioningStatus: "enabled",
	}
	return s, ek, srk
}

func call(s *Server, method, path, auth, body string) *httptest.ResponseRecorder {
	req := httptest.NewRequest(method, path, strings.NewReader(body))
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	w := httptest.NewRecorder()
	s.ServeHTTP(w, req)
	return w
}

// Device register bodies and tokens from outside: never a panic, never a
// 2xx or 5xx for garbage, and every answer is the JSON DPS sends.
func FuzzRegister(f *testing.F) {
	s, ek, srk := fuzzServer(f)
	full, _ := json.Marshal(registerBody("dev-1", ek, srk, map[string]any{"a": 1}))
	f.Add(string(full), "")
	f.Add(`{"registrationId":"dev-1"}`, "SharedAccessSignature sr=x&sig=AAAA&se=1&skn=registration")
	f.Add(`{"registrationId":"dev-1","tpm":{"endorsementKey":"AAA=","storageRootKey":null}}`, "")
	f.Add(`{"registrationId":"dev-1","tpm":null,"payload":null}`, "SharedAccessSignature ")
	f.Add(`[]`, "")
	f.Add("", "")
	path := registerPath(s.IDScope(), "dev-1", "2021-06-01")
	f.Fuzz(func(t *testing.T, body, auth string) {
		w := call(s, "PUT", path, auth, body)
		if w.Code != http.StatusUnauthorized && w.Code != http.StatusBadRequest && w.Code != http.StatusAccepted {
			t.Fatalf("status %d for body %q: %s", w.Code, body, w.Body)
		}
		if w.Code == http.StatusAccepted {
			t.Fatalf("a fuzzed token was accepted: %q", auth)
		}
		var m map[string]any
		if err := json.Unmarshal(w.Body.Bytes(), &m); err != nil {
			t.Fatalf("response is not JSON: %s", w.Body)
		}
	})
}

// Enrollment bodies from outside, with a valid service token.
func FuzzEnrollmentBody(f *testing.F) {
	s, ek, _ := fuzzServer(f)
	good, _ := json.Marshal(dpsservice.Enrollment{RegistrationID: "dev-2", Attestation: dpsservice.Attestation{Type: "tpm", TPM: &dpsservice.TPMAttestation{EndorsementKey: ek}}})
	f.Add(string(good))
	f.Add(`{"registrationId":"dev-2","attestation":{"type":"tpm"},"initialTwin":null}`)
	f.Add(`{"attestation":{"type":"x509"},"iotHubs":["a","b"],"allocationPolicy":"custom"}`)
	f.Add(`{"initialTwin":"x"}`)
	cs := s.ConnectionString()
	token, err := sas.New(f.Context(), sas.Key(cs.Key), cs.HostName, cs.KeyName, time.Now().Add(24*time.Hour))
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, body string) {
		w := call(s, "PUT", "/enrollments/dev-2?api-version=2021-10-01", token, body)
		switch w.Code {
		case http.StatusOK:
			var e dpsservice.Enrollment
			if err := json.Unmarshal(w.Body.Bytes(), &e); err != nil || e.RegistrationID != "dev-2" || e.ETag == "" || e.Attestation.Type != "tpm" {
				t.Fatalf("stored %s (%v)", w.Body, err)
			}
		case http.StatusBadRequest:
		default:
			t.Fatalf("status %d for %q", w.Code, body)
		}
	})
}

// If-Match handling: "*" and the current tag always match, with or without
// quotes; nothing matches a missing enrollment.
func FuzzETagMatch(f *testing.F) {
	for _, seed := range [][2]string{
		{`"abc"`, `"abc"`}, {`abc`, `"abc"`}, {`W/"abc"`, `"abc"`}, {`*`, `"x"`}, {`"a", "b"`, `"b"`}, {`""`, `""`}, {`,`, `"x"`},
	} {
		f.Add(seed[0], seed[1])
	}
	f.Fuzz(func(t *testing.T, header, tag string) {
		if etagMatches(header, nil) {
			t.Fatal("matched a missing enrollment")
		}
		e := &dpsservice.Enrollment{ETag: tag}
		got := etagMatches(header, e)
		if strings.TrimSpace(header) == "*" && !got {
			t.Fatal(`"*" did not match`)
		}
		if header == tag && strings.TrimSpace(tag) != "" && !strings.Contains(tag, ",") && !got {
			t.Fatalf("%q did not match itself", tag)
		}
	})
}

// Bulk operation bodies from outside: a 200 with a BulkEnrollmentOperationResult
// or a 400 with DPS's error body, never a panic or another status.
func FuzzBulkBody(f *testing.F) {
	ek, _, _ := keys(f)
	p := newInProcess(f, Config{ServiceOpsPerMinute: -1})
	for _, mode := range []string{dpsservice.BulkCreate, dpsservice.BulkUpdate, dpsservice.BulkUpdateIfMatchETag, dpsservice.BulkDelete, "Create", ""} {
		good, _ := json.Marshal(dpsservice.BulkOperation{Mode: mode, Enrollments: tpmEnrollments("dev", 3, ek)})
		f.Add(string(good))
	}
	f.Add(`{"mode":"create","enrollments":[{"registrationId":"a","attestation":{"type":"tpm"}},{"registrationId":"A"}]}`)
	f.Add(`{"mode":"delete","enrollments":[{"registrationId":"dev-0","etag":"*"},{"registrationId":"x y"}]}`)
	f.Add(`{"mode":"update","enrollments":[{"registrationId":"b","attestation":{"type":"tpm","tpm":{"endorsementKey":"AAAA"}},"initialTwin":"x"}]}`)
	f.Add(`{"mode":"create","enrollments":null}`)
	f.Add(`{"mode":"create","enrollments":[null]}`)
	f.Add(`{"enrollments":[{}],"mode":"update","mode":"delete"}`)
	f.Add(`[]`)
	f.Fuzz(func(t *testing.T, body string) {
		w := p.do("POST", "/enrollments"+apiQuery, body)
		switch w.Code {
		case http.StatusOK:
			var res dpsservice.BulkResult
			if err := json.Unmarshal(w.Body.Bytes(), &res); err != nil || res.IsSuccessful != (len(res.Errors) == 0) {
				t.Fatalf("result %s (%v)", w.Body, err)
			}
			for _, e := range res.Errors {
				if e.ErrorCode < 400000 || e.ErrorCode > 499999 || e.ErrorStatus == "" {
					t.Fatalf("error entry %+v", e)
				}
			}
		case http.StatusBadRequest:
			var eb dpsservice.ErrorBody
			if err := json.Unmarshal(w.Body.Bytes(), &eb); err != nil || eb.ErrorCode != codeBadRequest {
				t.Fatalf("400 body %s (%v)", w.Body, err)
			}
		default:
			t.Fatalf("status %d for %q", w.Code, body)
		}
	})
}
