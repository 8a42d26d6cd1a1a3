package registry

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

func key32(b byte) []byte { return bytes.Repeat([]byte{b}, 32) }

func TestPutGetDelete(t *testing.T) {
	r, err := New("")
	if err != nil {
		t.Fatal(err)
	}
	created := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	d := Device{Hub: "Lab-Hub.azure-devices.net", DeviceID: "dev1", RegistrationID: "reg1", PrimaryKey: key32(1), Created: created}
	if err := r.Put(d); err != nil {
		t.Fatal(err)
	}
	// The caller's slice is not aliased.
	d.PrimaryKey[0] = 9
	for _, tc := range []struct {
		hub, id string
		ok      bool
	}{
		{"lab-hub.azure-devices.net", "dev1", true},
		{"LAB-HUB.AZURE-DEVICES.NET", "dev1", true},
		{"lab-hub.azure-devices.net", "DEV1", false},
		{"other.azure-devices.net", "dev1", false},
	} {
		got, ok := r.Get(tc.hub, tc.id)
		if ok != tc.ok {
			t.Errorf("Get(%q, %q) found = %v, want %v", tc.hub, tc.id, ok, tc.ok)
			continue
		}
		if ok && (!bytes.Equal(got.PrimaryKey, key32(1)) || got.Status != StatusEnabled || !got.Created.Equal(created) || got.RegistrationID != "reg1") {
			t.Errorf("Get(%q, %q) = %+v", tc.hub, tc.id, got)
		}
	}
	got, _ := r.Get("lab-hub.azure-devices.net", "dev1")
	got.PrimaryKey[0] = 7
	if again, _ := r.Get("lab-hub.azure-devices.net", "dev1"); again.PrimaryKey[0] != 1 {
		t.Error("Get returned the registry's own key slice")
	}
	// Put replaces, whatever the hub's case.
	if err := r.Put(Device{Hub: "lab-hub.azure-devices.net", DeviceID: "dev1", PrimaryKey: key32(2)}); err != nil {
		t.Fatal(err)
	}
	if n := len(r.List()); n != 1 {
		t.Errorf("List has %d devices after a replace, want 1", n)
	}
	if got, _ := r.Get("lab-hub.azure-devices.net", "dev1"); !bytes.Equal(got.PrimaryKey, key32(2)) {
		t.Error("Put did not replace the key")
	}
	if err := r.Delete("LAB-HUB.azure-devices.net", "dev1"); err != nil {
		t.Fatal(err)
	}
	if _, ok := r.Get("lab-hub.azure-devices.net", "dev1"); ok {
		t.Error("device still there after Delete")
	}
	if err := r.Delete("lab-hub.azure-devices.net", "dev1"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Delete of a missing device = %v, want ErrNotFound", err)
	}
}

func TestEnsureKeepsExistingKey(t *testing.T) {
	r, _ := New("")
	first, err := r.Ensure(Device{Hub: "h.azure-devices.net", DeviceID: "d", PrimaryKey: key32(1)})
	if err != nil {
		t.Fatal(err)
	}
	second, err := r.Ensure(Device{Hub: "H.azure-devices.net", DeviceID: "d", PrimaryKey: key32(2)})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(first.PrimaryKey, key32(1)) || !bytes.Equal(second.PrimaryKey, key32(1)) {
		t.Errorf("Ensure keys = %x, %x, want both %x", first.PrimaryKey, second.PrimaryKey, key32(1))
	}
}

func TestPutRejectsInvalid(t *testing.T) {
	r, _ := New("")
	for _, d := range []Device{
		{DeviceID: "d", PrimaryKey: key32(1)},
		{Hub: "h", PrimaryKey: key32(1)},
		{Hub: "h", DeviceID: "a/b", PrimaryKey: key32(1)},
		{Hub: "h", DeviceID: string(bytes.Repeat([]byte("x"), 129)), PrimaryKey: key32(1)},
		{Hub: "h", DeviceID: "d", PrimaryKey: make([]byte, 15)},
		{Hub: "h", DeviceID: "d", PrimaryKey: make([]byte, 65)},
		{Hub: "h", DeviceID: "d", PrimaryKey: key32(1), Status: "banned"},
	} {
		if err := r.Put(d); err == nil {
			t.Errorf("Put(%+v) succeeded, want an error", d)
		}
	}
	if n := len(r.List()); n != 0 {
		t.Errorf("%d invalid devices were stored", n)
	}
}

func TestPersistence(t *testing.T) {
	path := filepath.Join(t.TempDir(), "registry.json")
	r, err := New(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("an empty registry wrote its file: %v", err)
	}
	for i := range 3 {
		if err := r.Put(Device{Hub: "h.azure-devices.net", DeviceID: fmt.Sprint("d", i), PrimaryKey: key32(byte(i + 1)), Status: StatusDisabled}); err != nil {
			t.Fatal(err)
		}
	}
	if err := r.Delete("h.azure-devices.net", "d1"); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("registry file mode = %v, want 0600", fi.Mode().Perm())
	}
	again, err := New(path)
	if err != nil {
		t.Fatal(err)
	}
	got := again.List()
	if len(got) != 2 || got[0].DeviceID != "d0" || got[1].DeviceID != "d2" {
		t.Fatalf("reloaded devices = %+v, want d0 and d2", got)
	}
	if !bytes.Equal(got[1].PrimaryKey, key32(3)) || got[1].Status != StatusDisabled {
		t.Errorf("reloaded d2 = %+v", got[1])
	}
}

func TestLoadRejectsBadFile(t *testing.T) {
	dir := t.TempDir()
	for name, content := range map[string]string{
		"not json":    "{",
		"bad device":  `{"devices":[{"hub":"h","deviceId":"d","primaryKey":"AAAA"}]}`,
		"bad base64":  `{"devices":[{"hub":"h","deviceId":"d","primaryKey":"!!"}]}`,
		"wrong shape": `{"devices":{}}`,
	} {
		path := filepath.Join(dir, name+".json")
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := New(path); err == nil {
			t.Errorf("%s: New succeeded, want an error", name)
		}
	}
}

func TestSaveFailureChangesNothing(t *testing.T) {
	dir := t.TempDir()
	r, err := New(filepath.Join(dir, "missing", "registry.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Put(Device{Hub: "h", DeviceID: "d", PrimaryKey: key32(1)}); err == nil {
		t.Fatal("Put into a missing folder succeeded")
	}
	if _, ok := r.Get("h", "d"); ok {
		t.Error("a device whose save failed is visible")
	}
}

func TestConcurrent(t *testing.T) {
	r, _ := New(filepath.Join(t.TempDir(), "registry.json"))
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			for j := range 10 {
				id := fmt.Sprint("d", i, "-", j)
				if err := r.Put(Device{Hub: "h", DeviceID: id, PrimaryKey: key32(1)}); err != nil {
					t.Error(err)
					return
				}
				if _, ok := r.Get("h", id); !ok {
					t.Errorf("%s missing right after Put", id)
				}
				r.List()
			}
		})
	}
	wg.Wait()
	if n := len(r.List()); n != 80 {
		t.Errorf("%d devices, want 80", n)
	}
}
