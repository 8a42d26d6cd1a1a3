package main

import (
	"encoding/base64"
	"strings"
	"testing"
	"time"

	"github.com/edgetpm/edgetpm/internal/cli"
	"github.com/edgetpm/edgetpm/internal/emulator/hubemu"
	"github.com/edgetpm/edgetpm/internal/hubservice"
	"github.com/edgetpm/edgetpm/internal/testharness/hubtest"
)

// lab module add makes a module identity the hub then accepts, printing
// no key; a module name without an identity is refused with CONNACK 5;
// list shows the IoT Edge device's system modules; remove ends the
// module's identity.
func TestLabModule(t *testing.T) {
	hub := hubtest.Start(t, hubemu.Config{
		Key:             hubtest.Keys(map[string][]byte{"edge1": []byte("edge1-device-key-0123456789abcdef")}),
		ServicePolicies: map[string][]byte{"iothubowner": ownerKey},
		Devices:         func() []string { return []string{"edge1"} },
	})
	dir := labStateOf(t, hub)
	connect := func(module string, key []byte) byte {
		t.Helper()
		rc, err := hubtest.ConnectCode(hub.ClientOptions("edge1", module, hub.ModuleToken(t, "edge1", module, key, time.Hour)))
		if err != nil {
			t.Fatal(err)
		}
		return rc
	}

	out, err := cmd(t, "lab", "module", "add", "--state-dir", dir, "--device", "edge1", "filter")
	if err != nil || !strings.Contains(out, "module identity edge1/filter created, generation ") {
		t.Fatalf("lab module add = %v\n%s", err, out)
	}
	svc := &hubservice.Client{Conn: hub.Policy("iothubowner", ownerKey), Endpoint: hub.URL, HTTP: hub.HTTP}
	m, err := svc.GetModule(t.Context(), "edge1", "filter")
	if err != nil {
		t.Fatal(err)
	}
	key := m.Authentication.SymmetricKey.PrimaryKey
	for _, k := range [][]byte{key, m.Authentication.SymmetricKey.SecondaryKey} {
		if strings.Contains(out, base64.StdEncoding.EncodeToString(k)) {
			t.Errorf("lab module add printed a key:\n%s", out)
		}
	}
	if rc := connect("filter", key); rc != 0 {
		t.Errorf("CONNECT as the added module = %d, want 0", rc)
	}
	if rc := connect("filtre", key); rc != 5 {
		t.Errorf("CONNECT as a module without identity = %d, want 5", rc)
	}

	out, err = cmd(t, "lab", "module", "list", "--state-dir", dir, "--device", "edge1")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if err != nil || len(lines) != 3 || !strings.HasPrefix(lines[0], "edge1/$edgeAgent\t") || !strings.HasSuffix(lines[0], "no keys") ||
		!strings.HasPrefix(lines[2], "edge1/filter\tgeneration "+m.GenerationID) || !strings.HasSuffix(lines[2], "sas keys") {
		t.Errorf("lab module list = %v\n%s", err, out)
	}

	if out, err := cmd(t, "lab", "module", "add", "--state-dir", dir, "--device", "edge1", "filter"); err == nil || !strings.Contains(err.Error(), "ModuleAlreadyExistsOnDevice") {
		t.Errorf("adding an existing module = %v\n%s, want ModuleAlreadyExistsOnDevice", err, out)
	}
	if out, err := cmd(t, "lab", "module", "remove", "--state-dir", dir, "--device", "edge1", "filter"); err != nil {
		t.Fatalf("lab module remove = %v\n%s", err, out)
	}
	if rc := connect("filter", key); rc != 5 {
		t.Errorf("CONNECT as the removed module = %d, want 5", rc)
	}

	for _, args := range [][]string{{}, {"rename"}, {"add", "--state-dir", dir, "--device", "edge1"}, {"list", "--state-dir", dir, "--device", "edge1", "x"}} {
		_, err := cmd(t, append([]string{"lab", "module"}, args...)...)
		if !cli.IsUsage(err) {
			t.Errorf("lab module %v = %v, want a usage error", args, err)
		}
	}
}
