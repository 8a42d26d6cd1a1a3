package dps

import (
	"errors"
	"strings"
	"testing"
	"time"
)

const blobB64 = "AAEC" // 3 bytes; the TPM judges the content

var challengeTests = []struct {
	name, in string
	blob     bool
	keyName  string
	ok       bool
}{
	// The shape real DPS sends (docs/dps-protocol.md#the-challenge).
	{"real", `{"message":"The request requires authentication.","authenticationKey":"AAEC","unencryptedAuthenticationKey":null,"keyName":"registration"}`, true, "registration", true},
	{"no key name", `{"authenticationKey":"AAEC"}`, true, "registration", true},
	{"no challenge", `{"errorCode":401002,"trackingId":"t","message":"Unauthorized"}`, false, "", true},
	{"empty body", ``, false, "", false},
	{"not base64", `{"authenticationKey":"!!"}`, false, "", false},
	{"bad key name", `{"authenticationKey":"AAEC","keyName":"a&b"}`, false, "", false},
	{"not an object", `"x"`, false, "", false},
}

func TestParseChallenge(t *testing.T) {
	for _, tc := range challengeTests {
		blob, kn, err := parseChallenge([]byte(tc.in))
		if (err == nil) != tc.ok || (blob != nil) != tc.blob || kn != tc.keyName {
			t.Errorf("%s: parseChallenge(%q) = %x, %q, %v; want blob %v, key name %q, ok %v", tc.name, tc.in, blob, kn, err, tc.blob, tc.keyName, tc.ok)
		}
		if err != nil && !errors.Is(err, ErrResponse) {
			t.Errorf("%s: error %v is not ErrResponse", tc.name, err)
		}
	}
}

var operationTests = []struct {
	name, in string
	ok       bool
}{
	// Real 202 body (Node issue #721, docs/dps-protocol.md#registering-and-polling).
	{"accepted", `{"operationId":"4.0bdadb0c47c2d6b4.4a081f01-f5f2-4d1c-87c5-af533f1a3958","status":"assigning"}`, true},
	{"assigning poll", `{"operationId":"4.a.b","status":"assigning","registrationState":{"registrationId":"r","status":"assigning"}}`, true},
	{"assigned", `{"operationId":"4.a.b","status":"assigned","registrationState":{"registrationId":"r","assignedHub":"h.azure-devices.net","deviceId":"d","status":"assigned","substatus":"initialAssignment","lastUpdatedDateTimeUtc":"2026-11-23T10:00:00.1234567Z","tpm":{"authenticationKey":"` + blobB64 + `"},"payload":{"a":1}}}`, true},
	{"failed", `{"operationId":"4.a.b","status":"failed","registrationState":{"registrationId":"r","status":"failed","errorCode":400209,"errorMessage":"Custom allocation failed"}}`, true},
	{"failed, string code", `{"operationId":"4.a.b","status":"failed","registrationState":{"errorCode":"400209"}}`, true},
	{"disabled", `{"operationId":"4.a.b","status":"disabled"}`, true},
	{"assigning without id", `{"status":"assigning"}`, false},
	{"operation id with slash", `{"operationId":"../x","status":"assigning"}`, false},
	{"unknown status", `{"operationId":"4.a.b","status":"done"}`, false},
	{"no status", `{"operationId":"4.a.b"}`, false},
	{"assigned without state", `{"operationId":"4.a.b","status":"assigned"}`, false},
	{"assigned without key", `{"operationId":"4.a.b","status":"assigned","registrationState":{"assignedHub":"h","deviceId":"d"}}`, false},
	{"assigned, key not base64", `{"operationId":"4.a.b","status":"assigned","registrationState":{"assignedHub":"h","deviceId":"d","tpm":{"authenticationKey":"@@"}}}`, false},
	{"assigned, bad hub", `{"operationId":"4.a.b","status":"assigned","registrationState":{"assignedHub":"h/evil","deviceId":"d","tpm":{"authenticationKey":"AAEC"}}}`, false},
	{"assigned, bad device", `{"operationId":"4.a.b","status":"assigned","registrationState":{"assignedHub":"h","deviceId":"a b","tpm":{"authenticationKey":"AAEC"}}}`, false},
	{"bad error code", `{"operationId":"4.a.b","status":"failed","registrationState":{"errorCode":"x"}}`, false},
	{"truncated", `{"operationId":"4.a.b","status":"assig`, false},
}

func TestParseOperation(t *testing.T) {
	for _, tc := range operationTests {
		op, err := parseOperation([]byte(tc.in))
		if (err == nil) != tc.ok {
			t.Errorf("%s: parseOperation(%q) = %+v, %v; want ok %v", tc.name, tc.in, op, err, tc.ok)
		}
	}
}

func TestParseError(t *testing.T) {
	e := parseError(401, "req-1", []byte(`{"errorCode":401002,"trackingId":"f40da7ba","message":"Unauthorized","timestampUtc":"2019-03-15T19:43:02.7904455Z"}`))
	if e.Code != 401002 || e.TrackingID != "f40da7ba" || e.Message != "Unauthorized" || e.HTTPStatus != 401 {
		t.Errorf("parseError = %+v", e)
	}
	want := "DPS answered 401 Unauthorized (errorCode 401002): Unauthorized [trackingId f40da7ba]"
	if e.Error() != want {
		t.Errorf("Error() = %q, want %q", e.Error(), want)
	}
	e = parseError(503, "req-2", []byte("<html>\x1b[31mbusy"))
	if e.Code != 0 || e.TrackingID != "req-2" || !e.transient() {
		t.Errorf("parseError(html) = %+v, want status only, transient", e)
	}
	long := parseError(400, "", []byte(`{"message":"`+strings.Repeat("x", 5000)+"\\u001b"+`"}`))
	if len(long.Message) > 520 || strings.ContainsRune(long.Message, 0x1b) {
		t.Errorf("parseError kept %d bytes or a control character of the message", len(long.Message))
	}
}

func TestRetryAfter(t *testing.T) {
	for in, want := range map[string]time.Duration{
		"": 0, "0": 0, "1": time.Second, " 2 ": 2 * time.Second, "300": 300 * time.Second,
		"301": 0, "-1": 0, "1.5": 0, "Wed, 21 Oct 2015 07:28:00 GMT": 0,
	} {
		if got := retryAfter(in); got != want {
			t.Errorf("retryAfter(%q) = %v, want %v", in, got, want)
		}
	}
}

func TestParseTime(t *testing.T) {
	got := parseTime("2026-11-23T10:00:00.1234567Z")
	if want := time.Date(2026, 11, 23, 10, 0, 0, 123456700, time.UTC); !got.Equal(want) {
		t.Errorf("parseTime = %v, want %v", got, want)
	}
	if !parseTime("yesterday").IsZero() {
		t.Error("parseTime(garbage) is not zero")
	}
}

func FuzzParseChallenge(f *testing.F) {
	for _, tc := range challengeTests {
		f.Add([]byte(tc.in))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		blob, kn, err := parseChallenge(data)
		if err == nil && blob != nil && !validName(kn, 64) {
			t.Fatalf("accepted key name %q", kn)
		}
	})
}

func FuzzParseOperation(f *testing.F) {
	for _, tc := range operationTests {
		f.Add([]byte(tc.in))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		op, err := parseOperation(data)
		if err != nil {
			return
		}
		if op.Status == statusAssigned && (op.RegistrationState == nil || op.RegistrationState.TPM == nil ||
			!validHost(op.RegistrationState.AssignedHub) || !validDeviceID(op.RegistrationState.DeviceID)) {
			t.Fatalf("accepted an unusable assignment: %s", data)
		}
	})
}

func FuzzParseError(f *testing.F) {
	f.Add([]byte(`{"errorCode":401002,"trackingId":"t","message":"m"}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		e := parseError(500, "id", data)
		if strings.ContainsFunc(e.Error(), func(r rune) bool { return r < 0x20 }) {
			t.Fatalf("error text holds a control character: %q", e.Error())
		}
	})
}
