package assignment

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/edgetpm/edgetpm/internal/sas"
)

func sample() *Assignment {
	return &Assignment{
		IDScope: "0ne00000001", Endpoint: "https://global.azure-devices-provisioning.net",
		RegistrationID: "abc", AssignedHub: "hub.azure-devices.net", DeviceID: "dev-1",
		Substatus: "initialAssignment", AssignedAt: time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC),
		TPM: "device:/dev/tpmrm0", AuthKeyHandle: 0x81000100,
	}
}

func TestSaveLoad(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sub", "assignment.json")
	if _, err := Load(path); !errors.Is(err, os.ErrNotExist) || !strings.Contains(err.Error(), "register") {
		t.Errorf("Load(missing) = %v, want ErrNotExist saying to register", err)
	}
	want := sample()
	if err := Save(path, want); err != nil {
		t.Fatal(err)
	}
	got, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Load = %+v, want %+v", got, want)
	}
	for p, perm := range map[string]os.FileMode{path: 0o600, filepath.Dir(path): 0o700} {
		fi, err := os.Stat(p)
		if err != nil || fi.Mode().Perm() != perm {
			t.Errorf("mode of %s = %v, %v; want %v", p, fi.Mode().Perm(), err, perm)
		}
	}
	bad := *want
	bad.DeviceID = ""
	if err := Save(path, &bad); err == nil {
		t.Error("Save accepted an assignment without a device ID")
	}
	if got, _ := Load(path); got == nil || got.DeviceID != want.DeviceID {
		t.Errorf("a refused Save changed the file: %+v", got)
	}
}

func TestParse(t *testing.T) {
	for _, tc := range []struct{ name, in string }{
		{"empty", ""},
		{"not an object", "[]"},
		{"unknown field", `{"assignedHub":"h","deviceId":"d","registrationId":"r","tpm":"sim","authKeyHandle":2164261120,"key":"x"}`},
		{"trailing", `{"assignedHub":"h","deviceId":"d","registrationId":"r","tpm":"sim","authKeyHandle":2164261120} {}`},
		{"bad handle", `{"assignedHub":"h","deviceId":"d","registrationId":"r","tpm":"sim","authKeyHandle":1}`},
		{"no hub", `{"deviceId":"d","registrationId":"r","tpm":"sim","authKeyHandle":2164261120}`},
		{"hub with a slash", `{"assignedHub":"h/devices/x","deviceId":"d","registrationId":"r","tpm":"sim","authKeyHandle":2164261120}`},
		{"device with a slash", `{"assignedHub":"h","deviceId":"d/modules/m","registrationId":"r","tpm":"sim","authKeyHandle":2164261120}`},
		{"device with a space", `{"assignedHub":"h","deviceId":"d 1","registrationId":"r","tpm":"sim","authKeyHandle":2164261120}`},
	} {
		if a, err := Parse([]byte(tc.in)); err == nil {
			t.Errorf("%s: Parse(%q) = %+v, want an error", tc.name, tc.in, a)
		}
	}
	if _, err := Parse([]byte(`{"assignedHub":"h","deviceId":"d","registrationId":"r","tpm":"sim","authKeyHandle":2164261120}`)); err != nil {
		t.Errorf("Parse(minimal) = %v", err)
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte(`{"assignedHub":"h","deviceId":"d","registrationId":"r","tpm":"sim","authKeyHandle":2164261120}`))
	f.Add([]byte(`{"authKeyHandle":-1}`))
	f.Add([]byte(`{"assignedHub":"h","deviceId":"d","registrationId":"r","tpm":"sim","authKeyHandle":2164261120}{}`))
	f.Add([]byte(`{"idScope":"0ne00000001","endpoint":"https://global.azure-devices-provisioning.net","registrationId":"abc","assignedHub":"hub.azure-devices.net",` +
		`"deviceId":"dev-1","substatus":"initialAssignment","assignedAt":"2026-11-23T10:00:00Z","tpm":"device:/dev/tpmrm0","authKeyHandle":2164261120}`))
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, data []byte) {
		a, err := Parse(data)
		if err != nil {
			if a != nil {
				t.Fatalf("Parse(%q) = %+v with error %v", data, a, err)
			}
			return
		}
		if err := a.Validate(); err != nil {
			t.Fatalf("Parse accepted an invalid assignment: %v", err)
		}
		// The relay puts the hub and the device ID into host names, topics
		// and token audiences as they are.
		if !sas.ValidHostName(a.AssignedHub) || !sas.ValidID(a.DeviceID) {
			t.Fatalf("Parse accepted hub %q, device %q", a.AssignedHub, a.DeviceID)
		}
		// What Parse accepts, Save writes and Load reads back unchanged.
		path := filepath.Join(dir, "assignment.json")
		if err := Save(path, a); err != nil {
			t.Fatalf("Save(%+v) = %v", a, err)
		}
		back, err := Load(path)
		if err != nil {
			t.Fatalf("Load after Save(%+v) = %v", a, err)
		}
		if !back.AssignedAt.Equal(a.AssignedAt) {
			t.Fatalf("assignedAt %v came back as %v", a.AssignedAt, back.AssignedAt)
		}
		back.AssignedAt = a.AssignedAt
		if !reflect.DeepEqual(back, a) {
			t.Fatalf("Load after Save = %+v, want %+v", back, a)
		}
	})
}
