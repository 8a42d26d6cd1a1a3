package registry

import (
	"bytes"
	"path/filepath"
	"testing"
	"time"
)

func TestLookup(t *testing.T) {
	path := filepath.Join(t.TempDir(), "registry.json")
	key := bytes.Repeat([]byte{7}, 32)
	lookup := Lookup(path, "Lab-Hub.azure-devices.net")
	if _, ok := lookup("edge1", ""); ok {
		t.Fatal("a device before it exists has a key")
	}
	// Another process adds the device.
	r, err := New(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Put(Device{Hub: "lab-hub.azure-devices.net", DeviceID: "edge1", PrimaryKey: key, Status: StatusEnabled, Created: time.Now()}); err != nil {
		t.Fatal(err)
	}
	if k, ok := lookup("edge1", ""); !ok || !bytes.Equal(k, key) {
		t.Errorf("device key = %x, %v", k, ok)
	}
	if k, ok := lookup("edge1", "relay"); ok {
		t.Errorf("module key = %x; want none: modules are made in the hub's module registry", k)
	}
	d, _ := r.Get("lab-hub.azure-devices.net", "edge1")
	d.Status = StatusDisabled
	r.Put(d)
	if _, ok := lookup("edge1", ""); ok {
		t.Error("a disabled device still has a key")
	}
}
