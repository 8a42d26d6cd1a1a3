package main

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-tpm/tpm2"
	"golang.org/x/sys/unix"

	"github.com/edgetpm/edgetpm/internal/activation"
	"github.com/edgetpm/edgetpm/internal/assignment"
	"github.com/edgetpm/edgetpm/internal/cli"
	"github.com/edgetpm/edgetpm/internal/emulator/hubemu"
	"github.com/edgetpm/edgetpm/internal/emulator/registry"
	"github.com/edgetpm/edgetpm/internal/sas"
	"github.com/edgetpm/edgetpm/internal/testharness/hubtest"
	"github.com/edgetpm/edgetpm/internal/testharness/tpmtest"
	"github.com/edgetpm/edgetpm/internal/testharness/until"
	"github.com/edgetpm/edgetpm/provisioner/tpm"
)

// hubFixture is a TPM, an IoT hub emulator whose devices come from its
// registry file, as 'az iot hub device-identity create' makes them, and
// every output of edge-provisioner, which must never show a key.
type hubFixture struct {
	sw      *tpmtest.Swtpm
	hub     *hubtest.Server
	reg     *registry.Registry
	state   string
	outputs strings.Builder
	keys    [][]byte
}

func newHubFixture(t *testing.T) *hubFixture {
	t.Helper()
	dir := t.TempDir()
	regPath := filepath.Join(dir, "registry.json")
	f := &hubFixture{sw: tpmtest.StartSwtpm(t), state: filepath.Join(dir, "assignment.json")}
	var err error
	if f.reg, err = registry.New(regPath); err != nil {
		t.Fatal(err)
	}
	f.hub = hubtest.Start(t, hubemu.Config{Key: registry.Lookup(regPath, hubemu.DefaultHubHostName)})
	t.Cleanup(func() {
		out := f.outputs.String()
		if out == "" {
			t.Error("no output was recorded to look for keys in")
		}
		for _, k := range f.keys {
			if leaks(out, k) {
				t.Errorf("a device key shows in edge-provisioner's output or errors:\n%s", out)
			}
		}
	})
	return f
}

// leaks tells whether out holds key in any form it could take: raw,
// base64 (with or without padding), hex.
func leaks(out string, key []byte) bool {
	b64 := base64.StdEncoding.EncodeToString(key)
	return strings.Contains(out, string(key)) || strings.Contains(out, strings.TrimRight(b64, "=")) ||
		strings.Contains(out, base64.RawURLEncoding.EncodeToString(key)) || strings.Contains(strings.ToLower(out), hex.EncodeToString(key))
}

// createDevice adds a device with a fresh 32-byte key to the hub's
// registry, as the portal does, and returns the key.
func (f *hubFixture) createDevice(t *testing.T, id string) []byte {
	t.Helper()
	key := make([]byte, 32)
	rand.Read(key)
	if err := f.reg.Put(registry.Device{Hub: f.hub.HubHostName(), DeviceID: id, PrimaryKey: key, Status: registry.StatusEnabled, Created: time.Now()}); err != nil {
		t.Fatal(err)
	}
	f.keys = append(f.keys, key)
	return key
}

func (f *hubFixture) connectionString(device string, key []byte) string {
	return "HostName=" + f.hub.HubHostName() + ";DeviceId=" + device + ";SharedAccessKey=" + base64.StdEncoding.EncodeToString(key)
}

// cli runs edge-provisioner with the fixture's TPM and state, stdin and
// environ, and records what it printed.
func (f *hubFixture) cli(t *testing.T, stdin string, environ map[string]string, args ...string) (string, error) {
	t.Helper()
	env := map[string]string{"EDGE_TPM": f.sw.URI, "EDGE_PROVISIONER_STATE": f.state, "EDGE_AZIOT_CONFIG": filepath.Join(filepath.Dir(f.state), "aziot-config.toml")}
	for k, v := range environ {
		env[k] = v
	}
	out, errOut, err := runCLIStdin(t, env, strings.NewReader(stdin), args...)
	fmt.Fprintf(&f.outputs, "$ %q\n%s%s", args, out, errOut)
	if err != nil {
		fmt.Fprintf(&f.outputs, "error: %v\n", err)
	}
	return out, err
}

// token gets a device token from 'edge-provisioner token' and returns the
// emulator's CONNACK code for it: 0 accepted, 5 not authorized.
func (f *hubFixture) connectWithToken(t *testing.T, device string, args ...string) byte {
	t.Helper()
	out, err := f.cli(t, "", nil, append([]string{"token", "--ttl", "10m"}, args...)...)
	if err != nil {
		t.Fatalf("token: %v", err)
	}
	code, err := hubtest.ConnectCode(f.hub.ClientOptions(device, "", strings.TrimSpace(out)))
	if err != nil {
		t.Fatalf("connect with the token: %v", err)
	}
	return code
}

// snapshot is what the TPM holds that the hub identity could change: each
// persistent object's name, each NV index's name and contents.
func (f *hubFixture) snapshot(t *testing.T) string {
	t.Helper()
	tr, err := tpm.OpenTransport(f.sw.URI)
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	var b strings.Builder
	persistent, err := tpmtest.Handles(tr, 0x81000000)
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range persistent {
		rp, err := tpm2.ReadPublic{ObjectHandle: h}.Execute(tr)
		if err != nil {
			t.Fatalf("read public %#x: %v", h, err)
		}
		fmt.Fprintf(&b, "object %#x %x\n", h, rp.Name.Buffer)
	}
	nv, err := tpmtest.Handles(tr, 0x01000000)
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range nv {
		rp, err := tpm2.NVReadPublic{NVIndex: h}.Execute(tr)
		if err != nil {
			t.Fatalf("read NV public %#x: %v", h, err)
		}
		fmt.Fprintf(&b, "nv %#x %x", h, rp.NVName.Buffer)
		pub, err := rp.NVPublic.Contents()
		if err != nil {
			t.Fatal(err)
		}
		for off := 0; off < int(pub.DataSize); off += 512 {
			n := min(512, int(pub.DataSize)-off)
			data, err := tpm2.NVRead{
				AuthHandle: tpm2.AuthHandle{Handle: h, Name: rp.NVName, Auth: tpm2.PasswordAuth(nil)},
				NVIndex:    tpm2.NamedHandle{Handle: h, Name: rp.NVName},
				Size:       uint16(n), Offset: uint16(off),
			}.Execute(tr)
			if err != nil {
				fmt.Fprintf(&b, " (unreadable: %v)", err)
				break
			}
			fmt.Fprintf(&b, " %x", data.Data.Buffer)
		}
		b.WriteString("\n")
	}
	return b.String()
}

// hubIdentity is the TPM's hub identity as status --json shows it.
func (f *hubFixture) hubIdentity(t *testing.T) *hubIdentityJSON {
	t.Helper()
	dir := t.TempDir()
	out, err := f.cli(t, "", map[string]string{"EDGE_AZIOT_CONFIG": filepath.Join(dir, "config.toml"), "EDGE_CONTAINERD_ADDRESS": filepath.Join(dir, "none.sock")}, "status", "--json")
	var r statusReport
	if err != nil || json.Unmarshal([]byte(out), &r) != nil || r.TPM.Error != "" {
		t.Fatalf("status --json = %v, TPM %+v\n%s", err, r.TPM, out)
	}
	return r.TPM.HubIdentity
}

// The technician's path: the device's connection string pasted on stdin,
// read back, and a token signed in the TPM that the hub accepts for the
// key in its registry.
func TestHubIdentitySet(t *testing.T) {
	f := newHubFixture(t)
	key := f.createDevice(t, "press-7")
	out, err := f.cli(t, f.connectionString("press-7", key)+"\n", nil, "identity", "set", "--connection-string-file", "-")
	if err != nil || !strings.Contains(out, "device press-7 at "+f.hub.HubHostName()) {
		t.Fatalf("identity set = %v\n%s", err, out)
	}
	if got := f.hubIdentity(t); got == nil || *got != (hubIdentityJSON{f.hub.HubHostName(), "press-7"}) {
		t.Errorf("status --json hubIdentity = %+v", got)
	}
	human, err := f.cli(t, "", nil, "identity")
	if err != nil || !strings.Contains(human, "Hub identity:     device press-7 at "+f.hub.HubHostName()) {
		t.Errorf("identity = %v\n%s", err, human)
	}
	// identity --json is what DPS enrollment reads: nothing of the hub
	// identity there.
	if js, err := f.cli(t, "", nil, "identity", "--json"); err != nil || strings.Contains(js, "press-7") {
		t.Errorf("identity --json = %v\n%s", err, js)
	}

	// No assignment: token signs for the TPM's hub identity.
	if code := f.connectWithToken(t, "press-7"); code != 0 {
		t.Errorf("CONNECT with the TPM's token: CONNACK %d, want 0", code)
	}
	tokOut, err := f.cli(t, "", nil, "token", "--module", "relay")
	if err != nil {
		t.Fatal(err)
	}
	tok, err := sas.Parse(strings.TrimSpace(tokOut))
	if err != nil || tok.MatchAudience(sas.ModuleResource(f.hub.HubHostName(), "press-7", "relay")) != nil || tok.Verify(key, time.Now()) != nil {
		t.Errorf("token --module relay = %q (%v): not signed with the registry's key for the module's audience", tokOut, err)
	}
}

// Every source of the key gives the same identity; each replaces the one
// before, and only the newest key signs.
func TestHubIdentitySources(t *testing.T) {
	f := newHubFixture(t)
	dir := t.TempDir()
	file := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	hub := f.hub.HubHostName()
	for i, tc := range []struct {
		name    string
		stdin   string
		environ map[string]string
		args    func(key []byte) []string
	}{
		{"key file", "", nil, func(k []byte) []string {
			return []string{"--hub", hub, "--device", "dev-0", "--key-file", file("key", base64.StdEncoding.EncodeToString(k)+"\n")}
		}},
		{"key on stdin", "", nil, func(k []byte) []string { return []string{"--hub", hub, "--device", "dev-1", "--key-file", "-"} }},
		{"key in the environment", "", nil, nil},
		{"connection string file", "", nil, func(k []byte) []string {
			return []string{"--connection-string-file", file("cs", f.connectionString("dev-3", k))}
		}},
		{"connection string in the environment", "", nil, nil},
	} {
		device := fmt.Sprintf("dev-%d", i)
		key := f.createDevice(t, device)
		var args []string
		environ := map[string]string{}
		stdin := ""
		switch i {
		case 1:
			stdin = base64.StdEncoding.EncodeToString(key)
			args = tc.args(key)
		case 2:
			environ = map[string]string{"EDGE_HUB_DEVICE_KEY": base64.StdEncoding.EncodeToString(key), "EDGE_HUB_HOSTNAME": hub, "EDGE_HUB_DEVICE_ID": device}
		case 4:
			environ = map[string]string{"EDGE_HUB_CONNECTION_STRING": f.connectionString(device, key)}
		default:
			args = tc.args(key)
		}
		out, err := f.cli(t, stdin, environ, append([]string{"identity", "set"}, args...)...)
		if err != nil {
			t.Errorf("%s: identity set = %v", tc.name, err)
			continue
		}
		if i > 0 && !strings.Contains(out, fmt.Sprintf("It replaces device dev-%d", i-1)) {
			t.Errorf("%s: identity set does not say what it replaced:\n%s", tc.name, out)
		}
		if got := f.hubIdentity(t); got == nil || got.DeviceID != device || got.HostName != hub {
			t.Errorf("%s: hub identity = %+v, want %s", tc.name, got, device)
		}
		if code := f.connectWithToken(t, device); code != 0 {
			t.Errorf("%s: CONNECT as %s: CONNACK %d, want 0", tc.name, device, code)
		}
		if i > 0 {
			// The previous device's key is gone from the TPM.
			if code := f.connectWithToken(t, fmt.Sprintf("dev-%d", i-1), "--hub", hub, "--device", fmt.Sprintf("dev-%d", i-1)); code != 5 {
				t.Errorf("%s: CONNECT as the replaced device: CONNACK %d, want 5", tc.name, code)
			}
		}
	}
}

// Bad input is refused with a clear usage error before the TPM is
// touched: the identity there keeps working.
func TestHubIdentityBadInput(t *testing.T) {
	f := newHubFixture(t)
	key := f.createDevice(t, "press-7")
	if _, err := f.cli(t, f.connectionString("press-7", key), nil, "identity", "set", "--connection-string-file", "-"); err != nil {
		t.Fatal(err)
	}
	before := f.snapshot(t)
	hub := f.hub.HubHostName()
	other := f.createDevice(t, "other")
	otherB64 := base64.StdEncoding.EncodeToString(other)
	keyFile := filepath.Join(t.TempDir(), "key")
	for _, tc := range []struct {
		name, stdin string
		environ     map[string]string
		args        []string
		want        string
	}{
		{"malformed base64", "not base64 at all!", nil, []string{"--hub", hub, "--device", "press-8", "--key-file", "-"}, "not standard base64"},
		{"cut base64", otherB64[:30], nil, []string{"--hub", hub, "--device", "press-8", "--key-file", "-"}, "not standard base64"},
		{"key too short", base64.StdEncoding.EncodeToString(other[:8]), nil, []string{"--hub", hub, "--device", "press-8", "--key-file", "-"}, "8 bytes once decoded"},
		{"key too long", base64.StdEncoding.EncodeToString(bytes.Repeat(other, 3)[:65]), nil, []string{"--hub", hub, "--device", "press-8", "--key-file", "-"}, "65 bytes once decoded"},
		{"empty device ID", "HostName=" + hub + ";DeviceId=;SharedAccessKey=" + otherB64, nil, []string{"--connection-string-file", "-"}, "device ID is empty"},
		{"no device ID", otherB64, nil, []string{"--hub", hub, "--key-file", "-"}, "needs --hub HOST and --device ID"},
		{"not an IoT hub", otherB64, nil, []string{"--hub", "plc.plant.local", "--device", "press-8", "--key-file", "-"}, "not an IoT hub's"},
		{"not an IoT hub in the connection string", "HostName=10.0.0.5;DeviceId=press-8;SharedAccessKey=" + otherB64, nil, []string{"--connection-string-file", "-"}, "not an IoT hub's"},
		{"shared access signature", "HostName=" + hub + ";DeviceId=press-8;SharedAccessSignature=SharedAccessSignature sr=" + hub + "%2Fdevices%2Fpress-8&sig=" + otherB64 + "&se=2000000000", nil, []string{"--connection-string-file", "-"}, "SharedAccessSignature, a token that expires"},
		{"module connection string", f.connectionString("press-8", other) + ";ModuleId=relay", nil, []string{"--connection-string-file", "-"}, "module's connection string"},
		{"connection string and --device", f.connectionString("press-8", other), nil, []string{"--device", "press-8", "--connection-string-file", "-"}, "leave out --hub and --device"},
		{"both files", "", nil, []string{"--key-file", keyFile, "--connection-string-file", "-"}, "not both"},
		{"both variables", "", map[string]string{"EDGE_HUB_DEVICE_KEY": otherB64, "EDGE_HUB_CONNECTION_STRING": f.connectionString("press-8", other)}, nil, "not both"},
		{"no key anywhere, no terminal", "", nil, []string{"--hub", hub, "--device", "press-8"}, "never on the command line"},
		{"missing key file", "", nil, []string{"--hub", hub, "--device", "press-8", "--key-file", keyFile}, "no such file"},
		{"a key in place of a connection string", otherB64, nil, []string{"--connection-string-file", "-"}, "a key alone"},
	} {
		out, err := f.cli(t, tc.stdin, tc.environ, append([]string{"identity", "set"}, tc.args...)...)
		if cli.ExitCode(err) != 2 || !strings.Contains(fmt.Sprint(err), tc.want) {
			t.Errorf("%s: identity set = %v (exit %d), want a usage error with %q", tc.name, err, cli.ExitCode(err), tc.want)
		}
		if out != "" {
			t.Errorf("%s: identity set printed %q", tc.name, out)
		}
		if after := f.snapshot(t); after != before {
			t.Errorf("%s: the TPM changed:\nbefore %s\nafter  %s", tc.name, before, after)
		}
	}
	if code := f.connectWithToken(t, "press-7"); code != 0 {
		t.Errorf("CONNECT with the identity set before: CONNACK %d, want 0", code)
	}
}

// A key DPS provisioned is replaced only with --force, which also removes
// the DPS assignment naming it; and provision leaves a hub identity alone.
func TestHubIdentityReplacesDPS(t *testing.T) {
	f := newHubFixture(t)
	dpsKey := make([]byte, 32)
	rand.Read(dpsKey)
	f.keys = append(f.keys, dpsKey)
	tp, err := tpm.Open(f.sw.URI, tpm.Config{})
	if err != nil {
		t.Fatal(err)
	}
	id, err := tp.Identity(t.Context())
	if err == nil {
		var blob []byte
		if blob, err = activation.Build(rand.Reader, id.EndorsementKey, id.StorageRootKey, dpsKey, nil); err == nil {
			err = tp.ImportKey(t.Context(), blob)
		}
	}
	tp.Close()
	if err != nil {
		t.Fatal(err)
	}
	if err := assignment.Save(f.state, &assignment.Assignment{
		IDScope: "0ne00000001", Endpoint: "https://global.azure-devices-provisioning.net", RegistrationID: id.RegistrationID,
		AssignedHub: "dps-hub.azure-devices.net", DeviceID: id.RegistrationID, Substatus: "initialAssignment", AssignedAt: time.Now().UTC(),
		TPM: f.sw.URI, AuthKeyHandle: uint32(tpm.DefaultAuthKeyHandle),
	}); err != nil {
		t.Fatal(err)
	}
	before := f.snapshot(t)
	key := f.createDevice(t, "press-7")
	cs := f.connectionString("press-7", key)
	_, err = f.cli(t, cs, nil, "identity", "set", "--connection-string-file", "-")
	if !errors.Is(err, tpm.ErrReplacesDPS) || cli.ExitCode(err) != 1 || strings.Count(err.Error(), "--force") != 1 || strings.Count(err.Error(), "provisioned by DPS") != 1 {
		t.Errorf("identity set over a DPS key = %v, want ErrReplacesDPS once, naming --force once", err)
	}
	if after := f.snapshot(t); after != before {
		t.Errorf("the refused identity set changed the TPM:\nbefore %s\nafter  %s", before, after)
	}
	if _, err := assignment.Load(f.state); err != nil {
		t.Errorf("the refused identity set removed the assignment: %v", err)
	}

	out, err := f.cli(t, cs, nil, "identity", "set", "--force", "--connection-string-file", "-")
	if err != nil || !strings.Contains(out, "replaces the key DPS provisioned") || !strings.Contains(out, "Removed the DPS assignment") {
		t.Fatalf("identity set --force = %v\n%s", err, out)
	}
	if _, err := os.Stat(f.state); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the assignment of the replaced key is still there: %v", err)
	}
	if code := f.connectWithToken(t, "press-7"); code != 0 {
		t.Errorf("CONNECT after --force: CONNACK %d, want 0", code)
	}

	_, err = f.cli(t, "", map[string]string{"EDGE_AZIOT_CONFIG": filepath.Join(t.TempDir(), "config.toml")},
		"provision", "--id-scope", "0ne00000001", "--no-apply", "--no-wait", "--skip-register")
	if !errors.Is(err, errHubIdentity) || cli.ExitCode(err) != exitTPM || !strings.Contains(err.Error(), "identity clear") {
		t.Errorf("provision with a hub identity in the TPM = %v (exit %d), want errHubIdentity, exit %d", err, cli.ExitCode(err), exitTPM)
	}
}

// clear asks first: without a terminal it needs --yes, and changes nothing
// without it.
func TestHubIdentityClear(t *testing.T) {
	f := newHubFixture(t)
	// The EK and SRK, persisted by identity, stay.
	if _, err := f.cli(t, "", nil, "identity"); err != nil {
		t.Fatal(err)
	}
	if f.hubIdentity(t) != nil {
		t.Fatal("a fresh TPM has a hub identity")
	}
	before := f.snapshot(t)
	key := f.createDevice(t, "press-7")
	if _, err := f.cli(t, f.connectionString("press-7", key), nil, "identity", "set", "--connection-string-file", "-"); err != nil {
		t.Fatal(err)
	}
	set := f.snapshot(t)
	if set == before {
		t.Fatal("identity set changed nothing in the TPM")
	}
	if _, err := f.cli(t, "y\n", nil, "identity", "clear"); cli.ExitCode(err) != 2 || !strings.Contains(err.Error(), "--yes") {
		t.Errorf("identity clear without a terminal or --yes = %v, want a usage error naming --yes", err)
	}
	if after := f.snapshot(t); after != set {
		t.Errorf("identity clear without --yes changed the TPM:\nbefore %s\nafter  %s", set, after)
	}
	out, err := f.cli(t, "", nil, "identity", "clear", "--yes")
	if err != nil || !strings.Contains(out, "Removed device press-7") {
		t.Fatalf("identity clear --yes = %v\n%s", err, out)
	}
	if after := f.snapshot(t); after != before {
		t.Errorf("identity clear left the TPM other than before identity set:\nbefore %s\nafter  %s", before, after)
	}
	if got := f.hubIdentity(t); got != nil {
		t.Errorf("hub identity after clear = %+v", got)
	}
	if _, err := f.cli(t, "", nil, "token"); cli.ExitCode(err) != 2 || !strings.Contains(err.Error(), "no hub identity") {
		t.Errorf("token with neither assignment nor hub identity = %v, want a usage error", err)
	}
	if out, err := f.cli(t, "", nil, "identity", "clear", "--yes"); err != nil || !strings.Contains(out, "nothing to clear") {
		t.Errorf("identity clear again = %v\n%s", err, out)
	}
}

// leaks itself finds a key in each form.
func TestLeaks(t *testing.T) {
	key := bytes.Repeat([]byte{0xfe, 0x01}, 16)
	for _, out := range []string{string(key), base64.StdEncoding.EncodeToString(key), base64.RawURLEncoding.EncodeToString(key), strings.ToUpper(hex.EncodeToString(key))} {
		if !leaks("x "+out+" y", key) {
			t.Errorf("leaks misses %q", out)
		}
	}
	if leaks("HostName=h;DeviceId=d;SharedAccessKey=<redacted>", key) {
		t.Error("leaks finds a key that is not there")
	}
}

// openPTY returns a pseudo-terminal: the controlling side, where the test
// types and reads what the terminal shows, and the terminal itself, for
// stdin.
func openPTY(t *testing.T) (ctl, tty *os.File) {
	t.Helper()
	ctl, err := os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Skipf("no pseudo-terminals: %v", err)
	}
	t.Cleanup(func() { ctl.Close() })
	if err := unix.IoctlSetPointerInt(int(ctl.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		t.Fatal(err)
	}
	n, err := unix.IoctlGetInt(int(ctl.Fd()), unix.TIOCGPTN)
	if err != nil {
		t.Fatal(err)
	}
	tty, err = os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tty.Close() })
	return ctl, tty
}

// On a terminal, identity set asks for the connection string without
// echoing it, and identity clear asks before it removes anything.
func TestHubIdentityTerminal(t *testing.T) {
	f := newHubFixture(t)
	ctl, tty := openPTY(t)
	key := f.createDevice(t, "press-7")
	cs := f.connectionString("press-7", key)
	env := map[string]string{"EDGE_TPM": f.sw.URI, "EDGE_PROVISIONER_STATE": f.state, "EDGE_AZIOT_CONFIG": filepath.Join(filepath.Dir(f.state), "aziot-config.toml")}
	type result struct {
		out, errOut string
		err         error
	}
	done := make(chan result, 1)
	go func() {
		out, errOut, err := runCLIStdin(t, env, tty, "identity", "set")
		done <- result{out, errOut, err}
	}()
	// Paste once the terminal no longer echoes, as a technician would
	// after the prompt.
	until.True(t, "identity set to turn the terminal's echo off", func() bool {
		tio, err := unix.IoctlGetTermios(int(tty.Fd()), unix.TCGETS)
		return err == nil && tio.Lflag&unix.ECHO == 0
	})
	if _, err := ctl.WriteString(cs + "\n"); err != nil {
		t.Fatal(err)
	}
	r := <-done
	fmt.Fprintf(&f.outputs, "%s%s", r.out, r.errOut)
	if r.err != nil || !strings.Contains(r.errOut, "Paste the device's primary connection string (not echoed)") || !strings.Contains(r.out, "device press-7") {
		t.Fatalf("identity set on a terminal = %v\nstdout %s\nstderr %s", r.err, r.out, r.errOut)
	}
	shown := readAvailable(t, ctl)
	fmt.Fprintf(&f.outputs, "terminal: %q\n", shown)
	if strings.Contains(shown, "SharedAccessKey") || strings.Contains(shown, "HostName") {
		t.Errorf("the terminal echoed the connection string: %q", shown)
	}
	if tio, err := unix.IoctlGetTermios(int(tty.Fd()), unix.TCGETS); err != nil || tio.Lflag&unix.ECHO == 0 {
		t.Errorf("identity set left the terminal's echo off (%v)", err)
	}
	if code := f.connectWithToken(t, "press-7"); code != 0 {
		t.Errorf("CONNECT: CONNACK %d, want 0", code)
	}

	ctl.WriteString("n\n")
	_, errOut, err := runCLIStdin(t, env, tty, "identity", "clear")
	if err == nil || !strings.Contains(errOut, "Remove device press-7 at "+f.hub.HubHostName()) || f.hubIdentity(t) == nil {
		t.Errorf("identity clear answered n = %v\n%s", err, errOut)
	}
	ctl.WriteString("y\n")
	if out, _, err := runCLIStdin(t, env, tty, "identity", "clear"); err != nil || !strings.Contains(out, "Removed device press-7") || f.hubIdentity(t) != nil {
		t.Errorf("identity clear answered y = %v\n%s", err, out)
	}
}

// readAvailable reads what the controlling side has to read now.
func readAvailable(t *testing.T, ctl *os.File) string {
	t.Helper()
	var b strings.Builder
	buf := make([]byte, 4096)
	for {
		fds := []unix.PollFd{{Fd: int32(ctl.Fd()), Events: unix.POLLIN}}
		if n, err := unix.Poll(fds, 200); err != nil || n == 0 {
			return b.String()
		}
		n, err := unix.Read(int(ctl.Fd()), buf)
		if n <= 0 || err != nil {
			return b.String()
		}
		b.Write(buf[:n])
	}
}

// token and status take the TPM's hub identity over a DPS assignment that
// outlived its key: identity set --force interrupted before it removed the
// assignment, or an assignment naming the TPM by another URI.
func TestHubIdentityOverStaleAssignment(t *testing.T) {
	f := newHubFixture(t)
	key := f.createDevice(t, "press-7")
	if _, err := f.cli(t, f.connectionString("press-7", key), nil, "identity", "set", "--connection-string-file", "-"); err != nil {
		t.Fatal(err)
	}
	if err := assignment.Save(f.state, &assignment.Assignment{
		IDScope: "0ne00000001", Endpoint: "https://global.azure-devices-provisioning.net", RegistrationID: "reg-1",
		AssignedHub: f.hub.HubHostName(), DeviceID: "dps-device", Substatus: "initialAssignment", AssignedAt: time.Now().UTC(),
		TPM: f.sw.URI, AuthKeyHandle: uint32(tpm.DefaultAuthKeyHandle),
	}); err != nil {
		t.Fatal(err)
	}
	f.createDevice(t, "dps-device")
	out, err := f.cli(t, "", nil, "token", "--ttl", "10m")
	if err != nil {
		t.Fatal(err)
	}
	tok, err := sas.Parse(strings.TrimSpace(out))
	if err != nil || tok.MatchAudience(sas.DeviceResource(f.hub.HubHostName(), "press-7")) != nil || tok.Verify(key, time.Now()) != nil {
		t.Errorf("token with a stale assignment = %q (%v): not press-7's, signed with its key", out, err)
	}
	if code := f.connectWithToken(t, "press-7"); code != 0 {
		t.Errorf("CONNECT as press-7 with a stale assignment: CONNACK %d, want 0", code)
	}

	dir := t.TempDir()
	environ := map[string]string{"EDGE_AZIOT_CONFIG": filepath.Join(dir, "config.toml"), "EDGE_CONTAINERD_ADDRESS": filepath.Join(dir, "none.sock")}
	js, err := f.cli(t, "", environ, "status", "--json")
	var r statusReport
	if err != nil || json.Unmarshal([]byte(js), &r) != nil {
		t.Fatalf("status --json = %v\n%s", err, js)
	}
	if r.Assignment.Assignment == nil || !strings.Contains(r.Assignment.Superseded, "press-7") {
		t.Errorf("status --json assignment = %+v, want it superseded by the hub identity", r.Assignment)
	}
	human, err := f.cli(t, "", environ, "status")
	if err != nil || !strings.Contains(human, "superseded by the TPM's hub identity") {
		t.Errorf("status = %v, want the assignment marked superseded\n%s", err, human)
	}
}

// A record that names no key (a crash between evicting the key and
// removing the record, or a key evicted by other tools) is removed by
// identity clear, not reported as nothing to clear.
func TestHubIdentityClearStaleRecord(t *testing.T) {
	f := newHubFixture(t)
	key := f.createDevice(t, "press-7")
	if _, err := f.cli(t, f.connectionString("press-7", key), nil, "identity", "set", "--connection-string-file", "-"); err != nil {
		t.Fatal(err)
	}
	tr, err := tpm.OpenTransport(f.sw.URI)
	if err != nil {
		t.Fatal(err)
	}
	h := tpm.DefaultAuthKeyHandle
	rp, err := tpm2.ReadPublic{ObjectHandle: h}.Execute(tr)
	if err == nil {
		_, err = tpm2.EvictControl{Auth: tpm2.AuthHandle{Handle: tpm2.TPMRHOwner, Auth: tpm2.PasswordAuth(nil)}, ObjectHandle: tpm2.NamedHandle{Handle: h, Name: rp.Name}, PersistentHandle: h}.Execute(tr)
	}
	tr.Close()
	if err != nil {
		t.Fatalf("evict the hub key: %v", err)
	}
	if !strings.Contains(f.snapshot(t), fmt.Sprintf("nv %#x", uint32(tpm.HubIdentityIndex))) {
		t.Fatal("no hub identity record left to test with")
	}
	if got := f.hubIdentity(t); got != nil {
		t.Fatalf("hub identity without its key = %+v, want none", got)
	}
	out, err := f.cli(t, "", nil, "identity", "clear", "--yes")
	if err != nil || strings.Contains(out, "nothing to clear") || !strings.Contains(out, "names no key") {
		t.Errorf("identity clear --yes with a record naming no key = %v\n%s", err, out)
	}
	if strings.Contains(f.snapshot(t), fmt.Sprintf("nv %#x", uint32(tpm.HubIdentityIndex))) {
		t.Error("identity clear left the record that names no key")
	}
	if out, err := f.cli(t, "", nil, "identity", "clear", "--yes"); err != nil || !strings.Contains(out, "nothing to clear") {
		t.Errorf("identity clear again = %v\n%s", err, out)
	}
}

// On an IoT Edge device that config.toml provisions through DPS with the
// TPM, identity set refuses even with --force: aziot would register again
// and put DPS's key over the hub identity's. Without the provisioning
// section it proceeds.
func TestHubIdentitySetRefusesAziotDPS(t *testing.T) {
	f := newHubFixture(t)
	if _, err := f.cli(t, "", nil, "identity"); err != nil {
		t.Fatal(err)
	}
	before := f.snapshot(t)
	config := filepath.Join(t.TempDir(), "config.toml")
	dpsTPM := "hostname = \"press-7\"\n\n[provisioning]\nsource = \"dps\"\nglobal_endpoint = \"https://global.azure-devices-provisioning.net\"\nid_scope = \"0ne00000001\"\n\n[provisioning.attestation]\nmethod = \"tpm\"\nregistration_id = \"press-7\"\n"
	if err := os.WriteFile(config, []byte(dpsTPM), 0o600); err != nil {
		t.Fatal(err)
	}
	key := f.createDevice(t, "press-7")
	environ := map[string]string{"EDGE_AZIOT_CONFIG": config}
	for _, args := range [][]string{{"identity", "set", "--connection-string-file", "-"}, {"identity", "set", "--force", "--connection-string-file", "-"}} {
		_, err := f.cli(t, f.connectionString("press-7", key), environ, args...)
		if !errors.Is(err, errAziotDPS) || !strings.Contains(err.Error(), config) || !strings.Contains(err.Error(), "[provisioning]") {
			t.Errorf("%q with config.toml provisioning by DPS with the TPM = %v, want errAziotDPS naming the file and its [provisioning] section", args, err)
		}
		if after := f.snapshot(t); after != before {
			t.Errorf("the refused %q changed the TPM:\nbefore %s\nafter  %s", args, before, after)
		}
	}
	if err := os.WriteFile(config, []byte("hostname = \"press-7\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := f.cli(t, f.connectionString("press-7", key), environ, "identity", "set", "--connection-string-file", "-"); err != nil {
		t.Errorf("identity set with config.toml provisioning nothing = %v", err)
	}
}
