package dpsemu

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/edgetpm/edgetpm/internal/dpsservice"
	"github.com/edgetpm/edgetpm/internal/sas"
	"github.com/edgetpm/edgetpm/internal/testharness/tpmtest"
	"github.com/edgetpm/edgetpm/provisioner/tpm"
)

// These tests activate the blobs in the reference TPM simulator, which is
// one instance per process: they must not run in parallel with each other.

func openSim(t *testing.T) (*tpm.TPM, *tpm.Identity) {
	t.Helper()
	tp, err := tpm.Open(tpmtest.StartSim(t), tpm.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tp.Close() })
	id, err := tp.Identity(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	return tp, id
}

var operationIDPattern = regexp.MustCompile(`^4\.[0-9a-f]{16}\.[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)

// challengeBlob checks a 401 challenge (docs/dps-protocol.md#the-challenge) and returns blob #1.
func challengeBlob(t *testing.T, r *response) []byte {
	t.Helper()
	if r.Status != http.StatusUnauthorized {
		t.Fatalf("first PUT: status %d, body %s; want 401", r.Status, r.Body)
	}
	m := r.json(t)
	if v, ok := m["unencryptedAuthenticationKey"]; !ok || v != nil {
		t.Errorf("unencryptedAuthenticationKey = %v (present %v), want null", v, ok)
	}
	if m["keyName"] != "registration" || m["message"] == "" {
		t.Errorf("challenge body %s: want keyName registration and a message", r.Body)
	}
	if !r.hasHeader("Content-Type", contentTypeJSON) || r.Header.Get("X-Ms-Request-Id") == "" {
		t.Errorf("challenge headers:\n%s", r.RawHeader)
	}
	s, _ := m["authenticationKey"].(string)
	blob, err := base64.StdEncoding.DecodeString(s)
	if err != nil || len(blob) < 766 {
		t.Fatalf("authenticationKey %q is not a blob: %v", s, err)
	}
	return blob
}

// The whole flow of docs/dps-protocol.md#the-flow with a real TPM: challenge, activation,
// a SAS signed in the TPM, 202 with a literal lowercase retry-after, polls,
// the assignment, and blob #2 carrying the hub device key. A second
// registration gets the same device key.
func TestDeviceFlowTPM(t *testing.T) {
	tp, id := openSim(t)
	e := newEnv(t, Config{AssignDelay: 3 * time.Second, RetryAfter: 3})
	scope, regID := e.srv.IDScope(), id.RegistrationID
	e.enroll(t, dpsservice.Enrollment{RegistrationID: regID, DeviceID: "edge-1", Capabilities: &dpsservice.Capabilities{IoTEdge: true}}, id.EndorsementKey)
	payload := map[string]any{"modelId": "dtmi:lab:edge;1"}
	var deviceKey []byte

	for round := 1; round <= 2; round++ {
		body := registerBody(regID, id.EndorsementKey, id.StorageRootKey, payload)
		r := e.device(t, "PUT", registerPath(scope, regID, "2021-06-01"), "", body)
		if err := tp.ImportKey(t.Context(), challengeBlob(t, r)); err != nil {
			t.Fatalf("round %d: activate blob #1: %v", round, err)
		}
		token, err := sas.New(t.Context(), tp, sas.DPSResource(scope, regID), sas.RegistrationKeyName, e.clock.Now().Add(time.Hour))
		if err != nil {
			t.Fatal(err)
		}

		r = e.device(t, "PUT", registerPath(scope, regID, "2021-06-01"), token, body)
		if r.Status != http.StatusAccepted {
			t.Fatalf("round %d: authorised PUT: %d %s, want 202", round, r.Status, r.Body)
		}
		if !r.hasHeader("retry-after", "3") {
			t.Errorf("202 lacks a literal lowercase retry-after: 3:\n%s", r.RawHeader)
		}
		m := r.json(t)
		opID, _ := m["operationId"].(string)
		if !operationIDPattern.MatchString(opID) || m["status"] != "assigning" || len(m) != 2 {
			t.Fatalf("202 body %s: want exactly operationId 4.<hex16>.<uuid> and status assigning", r.Body)
		}

		r = e.poll(t, regID, opID, token)
		if r.Status != http.StatusAccepted || !r.hasHeader("retry-after", "3") {
			t.Fatalf("poll before AssignDelay: %d\n%s%s", r.Status, r.RawHeader, r.Body)
		}
		if st, rs := result(t, r); st != "assigning" || rs.RegistrationID != regID || rs.Status != "assigning" {
			t.Errorf("poll before AssignDelay: %s", r.Body)
		}

		e.clock.Add(3 * time.Second)
		r = e.poll(t, regID, opID, token)
		if r.Status != http.StatusOK {
			t.Fatalf("poll after AssignDelay: %d %s", r.Status, r.Body)
		}
		st, rs := result(t, r)
		if st != "assigned" || rs.Status != "assigned" || rs.RegistrationID != regID || rs.AssignedHub != DefaultHub ||
			rs.DeviceID != "edge-1" || rs.Substatus != "initialAssignment" || rs.ETag == "" ||
			rs.CreatedDateTimeUTC.IsZero() || rs.LastUpdatedDateTimeUTC.IsZero() || rs.TPM == nil {
			t.Fatalf("round %d: assigned body %s", round, r.Body)
		}
		if string(rs.Payload) != `{"modelId":"dtmi:lab:edge;1"}` {
			t.Errorf("payload = %s, want the request's", rs.Payload)
		}
		if again := e.poll(t, regID, opID, token); again.Status != http.StatusOK || !bytes.Equal(again.Body, r.Body) {
			t.Errorf("a repeated poll gave %d %s, want the same result", again.Status, again.Body)
		}

		dev, ok := e.srv.Registry().Get(DefaultHub, "edge-1")
		if !ok || dev.RegistrationID != regID || len(dev.PrimaryKey) != 32 {
			t.Fatalf("registry device = %+v, %v", dev, ok)
		}
		if round == 2 && !bytes.Equal(dev.PrimaryKey, deviceKey) {
			t.Error("a second registration replaced the device key")
		}
		deviceKey = dev.PrimaryKey

		// Blob #2 carries the hub device key (docs/dps-protocol.md#after-assignment).
		if err := tp.ImportKey(t.Context(), rs.TPM.AuthenticationKey); err != nil {
			t.Fatalf("activate blob #2: %v", err)
		}
		hubToken, err := sas.New(t.Context(), tp, sas.DeviceResource(rs.AssignedHub, rs.DeviceID), "", e.clock.Now().Add(time.Hour))
		if err != nil {
			t.Fatal(err)
		}
		tok, err := sas.Parse(hubToken)
		if err != nil {
			t.Fatal(err)
		}
		if err := tok.Verify(dev.PrimaryKey, e.clock.Now()); err != nil {
			t.Errorf("hub token signed in the TPM does not verify with the registry key: %v", err)
		}
	}

	got, err := e.svc.GetEnrollment(t.Context(), regID)
	if err != nil {
		t.Fatal(err)
	}
	if rs := got.RegistrationState; rs == nil || rs.Status != "assigned" || rs.AssignedHub != DefaultHub || rs.DeviceID != "edge-1" {
		t.Errorf("enrollment registrationState = %+v", got.RegistrationState)
	}
}

// escapeLower percent-encodes like the C SDK's URL_EncodeString: lowercase
// hex (docs/dps-protocol.md#registration-sas-token).
func escapeLower(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte("-_.~", c) >= 0 {
			b.WriteByte(c)
		} else {
			b.WriteString("%" + strconv.FormatUint(uint64(c)>>4, 16) + strconv.FormatUint(uint64(c)&15, 16))
		}
	}
	return b.String()
}

// Every SDK's token form is accepted and the bad ones are refused, on the
// PUT and on the polls (docs/dps-protocol.md#registration-sas-token).
func TestTokenFormsTPM(t *testing.T) {
	tp, id := openSim(t)
	e := newEnv(t, Config{})
	scope, regID := e.srv.IDScope(), id.RegistrationID
	e.enroll(t, dpsservice.Enrollment{RegistrationID: regID}, id.EndorsementKey)
	full := registerBody(regID, id.EndorsementKey, id.StorageRootKey, nil)
	r := e.device(t, "PUT", registerPath(scope, regID, "2019-03-31"), "", full)
	if err := tp.ImportKey(t.Context(), challengeBlob(t, r)); err != nil {
		t.Fatal(err)
	}
	forger := sas.Key(make([]byte, 32))
	rand.Read(forger)
	now := e.clock.Now()
	token := func(signer sas.Signer, sr string, expiry time.Time, skn string, escape func(string) string) string {
		se := strconv.FormatInt(expiry.Unix(), 10)
		sig, err := signer.Sign(t.Context(), []byte(sr+"\n"+se))
		if err != nil {
			t.Fatal(err)
		}
		tok := "SharedAccessSignature sr=" + sr + "&sig=" + escape(base64.StdEncoding.EncodeToString(sig)) + "&se=" + se
		if skn != "" {
			tok += "&skn=" + skn
		}
		return tok
	}
	res := sas.DPSResource(scope, regID)
	nodeToken, err := sas.New(t.Context(), tp, res, "registration", now.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	iisBody := map[string]any{"registrationId": regID}
	cases := []struct {
		name  string
		token string
		body  any
		ok    bool
	}{
		{"C: lowercase %2f, 2400 s", token(tp, escapeLower(res), now.Add(2400*time.Second), "registration", escapeLower), full, true},
		{"Node: %2F, an hour", nodeToken, full, true},
		{"IIS: literal slash, lowercased scope, 30 s, no tpm", token(tp, strings.ToLower(res), now.Add(30*time.Second), "registration", sas.Escape), iisBody, true},
		{"C#: a day", token(tp, sas.Escape(res), now.Add(24*time.Hour), "registration", sas.Escape), full, true},
		{"expired within the skew", token(tp, sas.Escape(res), now.Add(-4*time.Minute), "registration", sas.Escape), full, true},
		{"expired beyond the skew", token(tp, sas.Escape(res), now.Add(-6*time.Minute), "registration", sas.Escape), full, false},
		{"wrong skn", token(tp, sas.Escape(res), now.Add(time.Hour), "provisioningserviceowner", sas.Escape), full, false},
		{"no skn", token(tp, sas.Escape(res), now.Add(time.Hour), "", sas.Escape), full, false},
		{"forged signature", token(forger, sas.Escape(res), now.Add(time.Hour), "registration", sas.Escape), full, false},
		{"wrong scope", token(tp, sas.Escape(sas.DPSResource("0ne00000000", regID)), now.Add(time.Hour), "registration", sas.Escape), full, false},
		{"other registration", token(tp, sas.Escape(sas.DPSResource(scope, "other")), now.Add(time.Hour), "registration", sas.Escape), full, false},
		{"malformed", "SharedAccessSignature sr=" + sas.Escape(res), full, false},
		{"not SAS", "Bearer abc", full, false},
	}
	var opID string
	for _, tc := range cases {
		r := e.device(t, "PUT", registerPath(scope, regID, "2021-06-01"), tc.token, tc.body)
		if tc.ok {
			if r.Status != http.StatusAccepted {
				t.Errorf("%s: PUT = %d %s, want 202", tc.name, r.Status, r.Body)
				continue
			}
			opID, _ = r.json(t)["operationId"].(string)
			continue
		}
		m := r.errorCode(t, http.StatusUnauthorized, codeUnauthorized)
		if _, sig, ok := strings.Cut(tc.token, "sig="); ok {
			sig, _, _ = strings.Cut(sig, "&")
			if msg, _ := m["message"].(string); strings.Contains(msg, sig) {
				t.Errorf("%s: error message echoes the signature: %q", tc.name, msg)
			}
		}
	}
	if opID == "" {
		t.Fatal("no token was accepted")
	}
	for _, tc := range cases {
		r := e.poll(t, regID, opID, tc.token)
		if tc.ok && r.Status != http.StatusOK {
			t.Errorf("%s: poll = %d %s, want 200", tc.name, r.Status, r.Body)
		}
		if !tc.ok {
			r.errorCode(t, http.StatusUnauthorized, codeUnauthorized)
		}
	}
}
