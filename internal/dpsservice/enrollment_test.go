package dpsservice_test

import (
	"encoding/json"
	"reflect"
	"testing"

	"github.com/edgetpm/edgetpm/internal/dpsservice"
)

var enrollmentSeeds = []string{
	`{"registrationId":"a","attestation":{"type":"tpm","tpm":{"endorsementKey":"AAE="}},"allocationPolicy":"custom","customAllocationDefinition":{"webhookUrl":"https://f.x/api","apiVersion":"2021-10-01"},"optionalDeviceInformation":{"fields":{"line":"7"}},"etag":"\"1\""}`,
	`{"registrationId":"b","attestation":{"type":"symmetricKey","symmetricKey":{"primaryKey":"cA=="}}}`,
	`{"RegistrationID":"c","attestation":{"type":"tpm"}}`,
	`{}`,
}

// Fields the type does not model survive a read and a write; modelled
// ones are never taken from Extra.
func TestEnrollmentExtra(t *testing.T) {
	var e dpsservice.Enrollment
	if err := json.Unmarshal([]byte(enrollmentSeeds[0]), &e); err != nil {
		t.Fatal(err)
	}
	if len(e.Extra) != 2 || e.Extra["customAllocationDefinition"] == nil || e.Extra["optionalDeviceInformation"] == nil {
		t.Fatalf("Extra = %s, want the custom allocation and the device information", e.Extra)
	}
	var c dpsservice.Enrollment
	if err := json.Unmarshal([]byte(enrollmentSeeds[2]), &c); err != nil || c.RegistrationID != "c" || c.Extra != nil {
		t.Errorf("a modelled field in another case: %+v, %v", c, err)
	}
	e.Extra["etag"] = json.RawMessage(`"forged"`)
	b, err := json.Marshal(e)
	if err != nil {
		t.Fatal(err)
	}
	var back map[string]json.RawMessage
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if string(back["customAllocationDefinition"]) != `{"webhookUrl":"https://f.x/api","apiVersion":"2021-10-01"}` || string(back["etag"]) != `"\"1\""` {
		t.Errorf("written back: %s", b)
	}
}

// Decoding any input, encoding and decoding again gives the same
// enrollment.
func FuzzEnrollmentJSON(f *testing.F) {
	for _, s := range enrollmentSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var e dpsservice.Enrollment
		if json.Unmarshal(data, &e) != nil {
			return
		}
		b, err := json.Marshal(e)
		if err != nil {
			t.Fatalf("Marshal of %q decoded: %v", data, err)
		}
		var again dpsservice.Enrollment
		if err := json.Unmarshal(b, &again); err != nil {
			t.Fatalf("Unmarshal of %s: %v", b, err)
		}
		if !reflect.DeepEqual(e.Extra, again.Extra) || e.RegistrationID != again.RegistrationID {
			t.Fatalf("round trip of %q: %+v, then %+v", data, e, again)
		}
	})
}
