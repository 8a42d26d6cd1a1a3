package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pelletier/go-toml/v2"

	"github.com/edgetpm/edgetpm/internal/cli"
	"github.com/edgetpm/edgetpm/internal/emulator/dpsemu"
	"github.com/edgetpm/edgetpm/internal/testharness/containerdtest"
	"github.com/edgetpm/edgetpm/internal/testharness/dpstest"
	"github.com/edgetpm/edgetpm/internal/testharness/tpmtest"
	"github.com/edgetpm/edgetpm/provisioner/edgeconfig"
)

// fakeApplyTool puts an iotedge on PATH that logs its arguments and
// answers as 'iotedge config apply' does. The real one writes under
// /etc/aziot (docs/edge-protocol.md#host-provisioning-file), whatever -c
// says, so the fake writes nothing; it needs the aziot packages, which
// Debian does not ship. exit is its exit status.
func fakeApplyTool(t testing.TB, exit int) (log string) {
	t.Helper()
	dir := t.TempDir()
	log = filepath.Join(dir, "calls")
	script := fmt.Sprintf(`#!/bin/sh
echo "$@" >> %q
[ "$1 $2 $3" = "config apply -c" ] || exit 64
echo "Note: Symmetric key will be written to /var/secrets/aziot/keyd/device-id"
echo "Azure IoT Edge has been configured successfully!"
exit %d
`, log, exit)
	if err := os.WriteFile(filepath.Join(dir, "iotedge"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", dir+string(os.PathListSeparator)+os.Getenv("PATH"))
	return log
}

// world is a device on the bench: swtpm, the DPS emulator with the TPM
// enrolled, a containerd daemon running edgeAgent and edgeHub, an image
// archive to side-load, and a settings file naming all of it.
type world struct {
	env      map[string]string
	settings string // the settings file
	aziot    string // config.toml
	regID    string
	emu      *dpstest.Server
	ctd      *containerdtest.Daemon
	image    string
}

func newWorld(t testing.TB) *world {
	t.Helper()
	sw := tpmtest.StartSwtpm(t)
	emu := dpstest.Start(t, dpsemu.Config{RetryAfter: 1}, nil)
	regID := enroll(t, emu, sw.URI, "press-7")

	ctd := containerdtest.Start(t)
	dir := t.TempDir()
	image, _ := containerdtest.BuildImage(t, dir, "example.com/edge-relay:1.0", "oci-layout", true)
	agent, _ := containerdtest.BuildImage(t, dir, "example.com/runtime:1.0", "docker-archive", false)
	ns := "moby"
	if err := loadForTest(t, ctd, ns, agent); err != nil {
		t.Fatal(err)
	}
	containerdtest.RunModule(t, ctd, ns, "example.com/runtime:1.0", "$edgeAgent")
	containerdtest.RunModule(t, ctd, ns, "example.com/runtime:1.0", "$edgeHub")

	w := &world{
		settings: filepath.Join(dir, "provisioner.toml"),
		aziot:    filepath.Join(dir, "aziot", "config.toml"),
		regID:    regID,
		emu:      emu,
		ctd:      ctd,
		image:    image,
	}
	if err := os.MkdirAll(filepath.Dir(w.aziot), 0o755); err != nil {
		t.Fatal(err)
	}
	state := filepath.Join(dir, "state", "assignment.json")
	conf := fmt.Sprintf(`state = %q
[dps]
id_scope = %q
endpoint = %q
ca_file = %q
[tpm]
uri = %q
[aziot]
config = %q
hostname = "press-7-host"
[images]
files = [%q]
containerd_address = %q
docker_socket = ""
[health]
timeout = "20s"
`, state, emu.IDScope(), emu.URL, emu.CAFile(t), sw.URI, w.aziot, image, ctd.Address)
	if err := os.WriteFile(w.settings, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	// runCLI points $EDGE_PROVISIONER_STATE at a fresh folder per run
	// unless told otherwise; runs here share the settings file's.
	w.env = map[string]string{"EDGE_PROVISIONER_CONFIG": w.settings, "EDGE_PROVISIONER_STATE": state}
	return w
}

// loadForTest side-loads an archive the way 'image load' does.
func loadForTest(t testing.TB, d *containerdtest.Daemon, ns, path string) error {
	t.Helper()
	_, _, err := runCLI(t, nil, "image", "load", "--containerd-address", d.Address, "--containerd-namespace", ns, "--docker-socket", "", path)
	return err
}

func provision(t *testing.T, w *world, args ...string) (*provisionReport, string, error) {
	t.Helper()
	out, progress, err := runCLI(t, w.env, append([]string{"provision", "--json"}, args...)...)
	var r provisionReport
	if jerr := json.Unmarshal([]byte(out), &r); jerr != nil {
		t.Fatalf("provision --json: %v\n%s\n%s", jerr, out, progress)
	}
	return &r, progress, err
}

// The whole flow, then a second run that changes nothing.
func TestProvision(t *testing.T) {
	w := newWorld(t)
	calls := fakeApplyTool(t, 0)

	r, progress, err := provision(t, w)
	if err != nil {
		t.Fatalf("provision: %v\n%s", err, progress)
	}
	if r.RegistrationID != w.regID || r.AssignedHub != dpsemu.DefaultHub || r.DeviceID != "press-7" || !r.ConfigChanged || !r.Changed || r.Backup != "" {
		t.Errorf("first provision = %+v", r)
	}
	if len(r.Steps) != 7 {
		t.Fatalf("steps = %+v, want 7", r.Steps)
	}
	// newWorld read the identity to enroll it, so the EK and SRK exist.
	for i, want := range []string{stepUnchanged, stepUnchanged, stepChanged, stepChanged, stepChanged, stepChanged, stepUnchanged} {
		if r.Steps[i].Status != want {
			t.Errorf("step %s = %s (%s), want %s", r.Steps[i].Name, r.Steps[i].Status, r.Steps[i].Detail, want)
		}
		if !strings.Contains(progress, fmt.Sprintf("[%d/7] %s", i+1, r.Steps[i].Name)) {
			t.Errorf("progress has no line for step %d %s:\n%s", i+1, r.Steps[i].Name, progress)
		}
	}
	if len(r.Images) != 1 || len(r.Images[0].Images) != 1 || r.Images[0].Images[0].Name != "example.com/edge-relay:1.0" || r.Images[0].Via != "containerd" {
		t.Errorf("images = %+v", r.Images)
	}
	modules := map[string]string{}
	for _, c := range r.Containers {
		modules[c.Module] = c.State
	}
	if modules["edgeAgent"] != "running" || modules["edgeHub"] != "running" {
		t.Errorf("containers = %+v, want edgeAgent and edgeHub running", r.Containers)
	}
	if strings.Contains(progress, "sig=") {
		t.Errorf("progress shows a token:\n%s", progress)
	}

	// config.toml: DPS with TPM, an integer auth_key_index, root-only.
	data, err := os.ReadFile(w.aziot)
	if err != nil {
		t.Fatal(err)
	}
	var conf struct {
		Hostname     string `toml:"hostname"`
		Provisioning struct {
			Source         string `toml:"source"`
			GlobalEndpoint string `toml:"global_endpoint"`
			IDScope        string `toml:"id_scope"`
			Attestation    struct {
				Method         string `toml:"method"`
				RegistrationID string `toml:"registration_id"`
			} `toml:"attestation"`
		} `toml:"provisioning"`
		TPM struct {
			TCTI         string `toml:"tcti"`
			AuthKeyIndex int64  `toml:"auth_key_index"`
		} `toml:"tpm"`
		Agent struct {
			Name   string `toml:"name"`
			Config struct {
				Image string `toml:"image"`
			} `toml:"config"`
		} `toml:"agent"`
	}
	if err := toml.Unmarshal(data, &conf); err != nil {
		t.Fatalf("config.toml: %v\n%s", err, data)
	}
	p := conf.Provisioning
	if conf.Hostname != "press-7-host" || p.Source != "dps" || p.GlobalEndpoint != w.emu.URL || p.IDScope != w.emu.IDScope() ||
		p.Attestation.Method != "tpm" || p.Attestation.RegistrationID != w.regID || conf.TPM.AuthKeyIndex != 0x100 ||
		conf.Agent.Name != "edgeAgent" || conf.Agent.Config.Image != "mcr.microsoft.com/azureiotedge-agent:1.5" || !strings.HasPrefix(conf.TPM.TCTI, "swtpm:host=127.0.0.1,port=") {
		t.Errorf("config.toml =\n%s", data)
	}
	if fi, err := os.Stat(w.aziot); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("config.toml mode = %v (%v), want 0600", fi.Mode().Perm(), err)
	}
	if b, err := os.ReadFile(calls); err != nil || strings.TrimSpace(string(b)) != "config apply -c "+w.aziot {
		t.Errorf("iotedge was called with %q (%v)", b, err)
	}

	// Again: nothing to do, and it says so.
	r, progress, err = provision(t, w)
	if err != nil {
		t.Fatalf("second provision: %v\n%s", err, progress)
	}
	if r.Changed || r.ConfigChanged {
		t.Errorf("second provision changed something: %+v", r.Steps)
	}
	if !strings.Contains(progress, "nothing changed") {
		t.Errorf("second provision does not say nothing changed:\n%s", progress)
	}
	if again, _ := os.ReadFile(w.aziot); string(again) != string(data) {
		t.Errorf("second provision rewrote config.toml")
	}
	if b, _ := os.ReadFile(calls); strings.Count(string(b), "\n") != 1 {
		t.Errorf("second provision applied again: %q", b)
	}
	if !r.Images[0].Images[0].Skipped {
		t.Errorf("second provision loaded the image again: %+v", r.Images)
	}
}

// Each failing step stops provision with its exit code and leaves
// config.toml as it was.
func TestProvisionStepFailures(t *testing.T) {
	w := newWorld(t)
	fakeApplyTool(t, 0)
	corrupt := filepath.Join(t.TempDir(), "corrupt.tar")
	os.WriteFile(corrupt, []byte("not a tar at all"), 0o600)
	for _, tc := range []struct {
		name   string
		setup  func(t *testing.T)
		args   []string
		code   int
		failed string
	}{
		{"not enrolled", nil, []string{"--registration-id", "someone-else"}, exitRegister, "DPS"},
		{"corrupt config.toml", func(t *testing.T) { os.WriteFile(w.aziot, []byte("[provisioning\nsource = 1\n"), 0o600) }, nil, exitConfig, "config.toml"},
		{"manual provisioning", func(t *testing.T) {
			os.WriteFile(w.aziot, []byte("[provisioning]\nsource = \"manual\"\nconnection_string = \"HostName=h;DeviceId=d;SharedAccessKey=AAAA\"\n"), 0o600)
		}, nil, exitConfig, "config.toml"},
		{"apply fails", func(t *testing.T) { os.Remove(w.aziot); fakeApplyTool(t, 1) }, nil, exitApply, "apply"},
		{"corrupt image", nil, []string{"--no-apply", "--image", corrupt}, exitImages, "images"},
		{"module missing", nil, []string{"--no-apply", "--wait-for", "edgeAgent,edgeHub,relay", "--wait-timeout", "2s"}, exitHealth, "runtime health"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.setup != nil {
				tc.setup(t)
			}
			before, _ := os.ReadFile(w.aziot)
			r, progress, err := provision(t, w, tc.args...)
			if cli.ExitCode(err) != tc.code {
				t.Fatalf("provision: exit %d (%v), want %d\n%s", cli.ExitCode(err), err, tc.code, progress)
			}
			if tc.code == exitHealth {
				// The next commands, for the runtime's own view.
				for _, want := range []string{"namespace moby", w.ctd.Address, "iotedge system status", "iotedge logs edgeAgent"} {
					if !strings.Contains(err.Error(), want) {
						t.Errorf("runtime health failure %q does not say %q", err, want)
					}
				}
			}
			last := r.Steps[len(r.Steps)-1]
			if last.Name != tc.failed || last.Status != stepFailed {
				t.Errorf("last step = %+v, want %s failed", last, tc.failed)
			}
			if tc.code <= exitConfig {
				if after, _ := os.ReadFile(w.aziot); string(after) != string(before) {
					t.Errorf("config.toml changed by a failed run:\n%s", after)
				}
			}
		})
	}
}

// --dry-run shows the diff and changes nothing.
func TestProvisionDryRun(t *testing.T) {
	w := newWorld(t)
	calls := fakeApplyTool(t, 0)
	out, progress, err := runCLI(t, w.env, "provision", "--dry-run")
	if err != nil {
		t.Fatalf("provision --dry-run: %v\n%s", err, progress)
	}
	if !strings.Contains(out, "+source = \"dps\"") || !strings.Contains(out, "+registration_id = \""+w.regID+"\"") ||
		!strings.Contains(out, "--- /dev/null\n+++ "+w.aziot+" (new file)\n") {
		t.Errorf("dry run diff:\n%s", out)
	}
	if _, err := os.Stat(w.aziot); !os.IsNotExist(err) {
		t.Errorf("dry run wrote config.toml: %v", err)
	}
	if _, err := os.Stat(calls); !os.IsNotExist(err) {
		t.Error("dry run applied")
	}
}

// --dry-run over an existing file heads the diff with the file as it is
// and as it would be, and shows none of the secrets it removes or keeps.
func TestProvisionDryRunOfExistingFile(t *testing.T) {
	w := newWorld(t)
	const old = "hostname = \"press-7-host\"\n\n[provisioning]\nsource = \"manual\"\n" +
		"connection_string = \"HostName=h.azure-devices.net;DeviceId=d;SharedAccessKey=b2xkLWRldmljZS1rZXk=\"\n\n" +
		"[agent]\nname = \"edgeAgent\"\ntype = \"docker\"\n\n[agent.config]\nimage = \"mcr.microsoft.com/azureiotedge-agent:1.5\"\n" +
		"\n[agent.config.auth]\nserveraddress = \"acr.example\"\nusername = \"u\"\npassword = \"cmVnaXN0cnktcGFzcw\"\n" +
		"\n[agent.env]\nhttps_proxy = \"http://op:cHJveHktcGFzcw@proxy:3128\"\n"
	if err := os.WriteFile(w.aziot, []byte(old), 0o600); err != nil {
		t.Fatal(err)
	}
	out, progress, err := runCLI(t, w.env, "provision", "--dry-run", "--force")
	if err != nil {
		t.Fatalf("provision --dry-run --force: %v\n%s", err, progress)
	}
	if !strings.Contains(out, "--- "+w.aziot+" (current)\n+++ "+w.aziot+" (proposed)\n") || strings.Contains(out, "(new") {
		t.Errorf("dry run diff of an existing file is headed:\n%s", out)
	}
	if !strings.Contains(out, "-connection_string = \"<redacted") || !strings.Contains(out, "+source = \"dps\"") {
		t.Errorf("dry run diff does not show the change:\n%s", out)
	}
	for _, secret := range []string{"b2xkLWRldmljZS1rZXk", "cmVnaXN0cnktcGFzcw", "cHJveHktcGFzcw"} {
		if strings.Contains(out+progress, secret) {
			t.Errorf("dry run shows the secret %q:\n%s\n%s", secret, out, progress)
		}
	}
	if b, err := os.ReadFile(w.aziot); err != nil || string(b) != old {
		t.Errorf("dry run changed config.toml: %v\n%s", err, b)
	}
}

// Run by its systemd unit, provision queues the apply: the unit is ordered
// before the aziot services the apply restarts.
func TestProvisionQueuesApplyUnderSystemd(t *testing.T) {
	w := newWorld(t)
	calls := fakeApplyTool(t, 0)
	dir := t.TempDir()
	queued, env := filepath.Join(dir, "queued"), filepath.Join(dir, "env")
	script := fmt.Sprintf("#!/bin/sh\necho \"$@\" > %q\nenv > %q\n", queued, env)
	if err := os.WriteFile(filepath.Join(dir, "systemd-run"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", dir+string(os.PathListSeparator)+os.Getenv("PATH"))
	w.env["INVOCATION_ID"] = "0123456789abcdef"
	// Passwords in the process's environment, as systemd's
	// EnvironmentFile= would put them, never reach the child.
	t.Setenv("EDGE_TPM_ENDORSEMENT_AUTH", "endorsement-secret")
	t.Setenv("EDGE_TPM_OWNER_AUTH", "owner-secret")
	r, progress, err := provision(t, w, "--no-wait")
	if err != nil {
		t.Fatalf("provision: %v\n%s", err, progress)
	}
	if got := r.Steps[4]; got.Status != stepChanged || !strings.Contains(got.Detail, "queued") {
		t.Errorf("apply step = %+v, want queued", got)
	}
	b, err := os.ReadFile(queued)
	if err != nil || !strings.HasPrefix(string(b), "--no-block --collect --unit=edge-provisioner-apply ") || !strings.HasSuffix(strings.TrimSpace(string(b)), "/iotedge config apply -c "+w.aziot) {
		t.Errorf("systemd-run was called with %q (%v)", b, err)
	}
	if _, err := os.Stat(calls); !os.IsNotExist(err) {
		t.Error("iotedge ran directly under systemd")
	}
	var rec edgeconfig.AppliedRecord
	if b, err := os.ReadFile(filepath.Join(filepath.Dir(w.env["EDGE_PROVISIONER_STATE"]), "applied.json")); err != nil || json.Unmarshal(b, &rec) != nil || !rec.Queued || rec.Config != w.aziot {
		t.Errorf("apply record = %+v (%v), want the queued apply of %s", rec, err, w.aziot)
	}
	if b, err := os.ReadFile(env); err != nil || strings.Contains(string(b), "-secret") || !strings.Contains(string(b), "PATH=") {
		t.Errorf("systemd-run ran with the environment %q (%v), want it without the passwords", b, err)
	}
}

// BenchmarkProvisionUnchanged is provision on a provisioned device (swtpm,
// containerd with edgeAgent and edgeHub running, one image present): what
// every boot of the systemd unit costs. The first run is dominated by DPS's
// retry-after; BenchmarkRegister in provisioner/dps measures that.
func BenchmarkProvisionUnchanged(b *testing.B) {
	w := newWorld(b)
	fakeApplyTool(b, 0)
	if _, progress, err := runCLI(b, w.env, "provision"); err != nil {
		b.Fatalf("provision: %v\n%s", err, progress)
	}
	for b.Loop() {
		if _, progress, err := runCLI(b, w.env, "provision"); err != nil || !strings.Contains(progress, "nothing changed") {
			b.Fatalf("provision again = %v\n%s", err, progress)
		}
	}
}
