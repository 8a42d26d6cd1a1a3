package lab

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	ctd "github.com/containerd/containerd"
	"github.com/containerd/containerd/namespaces"

	"github.com/edgetpm/edgetpm/internal/emulator/hubemu"
	"github.com/edgetpm/edgetpm/internal/testharness/containerdtest"
	"github.com/edgetpm/edgetpm/internal/testharness/peertest"
	"github.com/edgetpm/edgetpm/internal/testharness/tpmtest"
	"github.com/edgetpm/edgetpm/internal/testharness/until"
	"github.com/edgetpm/edgetpm/provisioner/edgeconfig"
	"github.com/edgetpm/edgetpm/provisioner/tpm"
)

// testWriter sends progress lines to the test log.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// The whole path with real peers: swtpm, a containerd daemon running the
// relay image under runc, and Mosquitto. The provisioner registers by TPM
// attestation and writes config.toml; the runtime stand-in runs the relay
// container with workload-API tokens; the sensor's readings reach the hub;
// a desired-property change is applied and reported; the relay container
// is killed mid-stream and restarted, and every reading Mosquitto
// acknowledged is still found upstream.
func TestEndToEnd(t *testing.T) {
	sw := tpmtest.StartSwtpm(t)
	d := containerdtest.Start(t)
	peertest.Need(t, "mosquitto")
	const ns = "edgetpm-e2e"
	l, err := Up(t.Context(), Config{
		StateDir: t.TempDir(), TPM: sw.URI, Containerd: d.Address, Namespace: ns,
		Source: "../..", Broker: "mosquitto", Rate: 100, Progress: testWriter{t},
	})
	if err != nil {
		t.Fatal(err)
	}
	closed := false
	t.Cleanup(func() {
		if !closed {
			l.Close()
		}
	})

	// The provisioner wrote config.toml for DPS with TPM attestation, for
	// the TPM that tpm2-tools reads.
	info, err := os.Stat(l.path("config.toml"))
	if err != nil || info.Mode().Perm() != 0o600 {
		t.Fatalf("config.toml: %v, %v; want mode 0600", info, err)
	}
	doc, err := edgeconfig.Load(l.path("config.toml"))
	if err != nil {
		t.Fatal(err)
	}
	p := doc.Provisioning()
	if p.Source != "dps" || p.Method != "tpm" || p.RegistrationID != l.identity.RegistrationID || p.TCTI != sw.TCTI {
		t.Errorf("config.toml provisions with %+v; want DPS, TPM attestation, registration ID %s and the swtpm", p, l.identity.RegistrationID)
	}
	ekFile := filepath.Join(t.TempDir(), "ek.pub")
	if out, err := exec.Command(peertest.Need(t, "tpm2_readpublic"), "-T", sw.TCTI, "-c", "0x81010001", "-o", ekFile).CombinedOutput(); err != nil {
		t.Fatalf("tpm2_readpublic: %v\n%s", err, out)
	}
	ek, err := os.ReadFile(ekFile)
	if err != nil {
		t.Fatal(err)
	}
	if id := tpm.RegistrationID(ek); id != l.identity.RegistrationID || l.identity.DeviceID != id || l.identity.AssignedHub != Hub {
		t.Errorf("tpm2-tools' EK gives registration ID %s; the lab has %+v", id, l.identity)
	}

	// The relay runs as a container, with the IoT Edge environment and
	// the workload socket, and its module token got it into the hub.
	client, err := ctd.New(d.Address)
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	cctx := namespaces.WithNamespace(t.Context(), ns)
	cl := l.runtime.launch.(*containerdLauncher)
	ctr, err := client.LoadContainer(cctx, cl.id)
	if err != nil {
		t.Fatalf("the relay container: %v", err)
	}
	spec, err := ctr.Spec(cctx)
	if err != nil {
		t.Fatal(err)
	}
	env := strings.Join(spec.Process.Env, "\n")
	for _, want := range []string{"IOTEDGE_MODULEID=relay", "IOTEDGE_WORKLOADURI=unix:///var/run/iotedge/workload.sock", "IOTEDGE_DEVICEID=" + l.identity.DeviceID, "IOTEDGE_AUTHSCHEME=sasToken"} {
		if !strings.Contains(env, want) {
			t.Errorf("the relay container's environment lacks %s:\n%s", want, env)
		}
	}
	if spec.Process.User.UID != containerUID {
		t.Errorf("the relay runs as uid %d, want the image's %d", spec.Process.User.UID, containerUID)
	}
	until.True(t, "the relay to connect", func() bool { return l.hub.Connected(l.identity.DeviceID, ModuleID) })
	// The runtime made the relay's module identity in IoT Hub, and the
	// container runs as its generation.
	owner, err := ServicePolicy(l.stateDir, Hub)
	if err != nil {
		t.Fatal(err)
	}
	token, err := owner.Token(t.Context(), time.Now().Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	req := httptest.NewRequest(http.MethodGet, "/devices/"+l.identity.DeviceID+"/modules/"+ModuleID+"?api-version=2021-04-12", nil)
	req.Header.Set("Authorization", token)
	rec := httptest.NewRecorder()
	l.hub.ServiceHandler().ServeHTTP(rec, req)
	var mod struct {
		GenerationID    string `json:"generationId"`
		ConnectionState string `json:"connectionState"`
	}
	json.Unmarshal(rec.Body.Bytes(), &mod)
	if rec.Code != http.StatusOK || mod.GenerationID == "" || !strings.Contains(env, "IOTEDGE_MODULEGENERATIONID="+mod.GenerationID+"\n") || mod.ConnectionState != "Connected" {
		t.Errorf("the relay's module identity: %d %s; container environment:\n%s", rec.Code, rec.Body, env)
	}
	upstreamAtLeast(t, l, 100)

	// A desired-property change is applied and reported.
	v, err := l.hub.UpdateDesired(l.identity.DeviceID, ModuleID, []byte(`{"batching":{"enabled":true,"maxMessages":20}}`))
	if err != nil {
		t.Fatal(err)
	}
	if err := l.waitApplied(t.Context(), v, 20*time.Second); err != nil {
		t.Fatal(err)
	}
	r, ok, err := Reported(t.Context(), l.service, l.identity.DeviceID, ModuleID)
	if err != nil || !ok || r.AppliedVersion != v || !r.Effective.Batching.Enabled {
		t.Errorf("reported after desired version %d: %+v, %v, %v", v, r, ok, err)
	}
	before := len(l.upstream())
	until.True(t, "batches upstream", func() bool { return hasBatch(l.upstream()[before:]) })

	// The relay container is killed mid-stream; the runtime starts it
	// again, and nothing the relay took from Mosquitto is lost.
	task, err := ctr.Task(cctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := task.Kill(cctx, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	until.Within(t, 30*time.Second, "the runtime to restart the relay", func() bool { return l.runtime.restarts() == 1 })
	until.Within(t, 30*time.Second, "the restarted relay to connect", func() bool { return l.hub.Connected(l.identity.DeviceID, ModuleID) })
	upstreamAtLeast(t, l, len(l.upstream())+20)
	if err := l.Drain(t.Context(), 30*time.Second); err != nil {
		t.Fatal(err)
	}
	s := l.Summary(t.Context())
	if s.MessagesPublished < 100 || s.MessagesUpstream != s.MessagesPublished || s.RelayRestarts != 1 || s.TwinVersionApplied != v {
		t.Errorf("summary %+v; want every published reading upstream, one restart and desired version %d applied", s, v)
	}
	t.Logf("summary: %+v", s)

	// Close leaves no container, process or socket behind.
	socket := l.runtime.spec.socket
	closed = true
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if cs, err := client.Containers(cctx); err != nil || len(cs) != 0 {
		t.Errorf("containers left in %s: %d, %v", ns, len(cs), err)
	}
	if _, err := os.Stat(filepath.Dir(socket)); !os.IsNotExist(err) {
		t.Errorf("the workload socket's folder is left: %v", err)
	}
	if pids := processesWith(l.path()); len(pids) > 0 {
		t.Errorf("processes left that name the state folder: %v", pids)
	}
}

// The lab on embedded defaults, as a newcomer runs it: the reference
// simulator in this process, the relay as a local process and the embedded
// broker.
func TestEmbeddedDefaults(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binaries")
	}
	l, err := Up(t.Context(), Config{StateDir: t.TempDir(), Source: "../..", Broker: "embedded", Rate: 50, Progress: testWriter{t}})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	upstreamAtLeast(t, l, 50)
	if err := l.Drain(t.Context(), 20*time.Second); err != nil {
		t.Fatal(err)
	}
	s := l.Summary(t.Context())
	if s.MessagesPublished < 50 || s.MessagesRelayed != s.MessagesPublished || s.MessagesAcknowledged != s.MessagesPublished || s.TwinVersionApplied < 2 || s.DeviceID == "" {
		t.Errorf("summary %+v", s)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if pids := processesWith(l.path()); len(pids) > 0 {
		t.Errorf("processes left that name the state folder: %v", pids)
	}
}

// A lab whose provisioning fails says why and stops what it had started:
// the emulators' ports are closed and the swtpm it started is gone.
func TestUpFails(t *testing.T) {
	peertest.Need(t, "swtpm")
	bin := t.TempDir()
	for name, script := range map[string]string{
		"edge-provisioner": "#!/bin/sh\necho 'DPS registration: 401 not enrolled' >&2\nexit 4\n",
		"edge-relay":       "#!/bin/sh\nexit 1\n",
	} {
		if err := os.WriteFile(filepath.Join(bin, name), []byte(script), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	dir := t.TempDir()
	_, err := Up(t.Context(), Config{StateDir: dir, TPM: "swtpm", Bin: bin, Broker: "embedded"})
	if err == nil || !strings.Contains(err.Error(), "edge-provisioner provision") || !strings.Contains(err.Error(), "not enrolled") {
		t.Fatalf("Up with a failing provisioner = %v", err)
	}
	for _, f := range []string{DPSEndpointFile, HubEndpointFile} {
		b, err := os.ReadFile(filepath.Join(dir, f))
		if err != nil {
			t.Fatal(err)
		}
		addr := strings.TrimPrefix(strings.TrimSpace(string(b)), "https://")
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			t.Errorf("%s still listens on %s", f, addr)
		}
	}
	if pids := processesWith(dir); len(pids) > 0 {
		t.Errorf("processes left that name the state folder: %v", pids)
	}
}

// upstreamAtLeast waits until the hub holds n messages from the relay.
func upstreamAtLeast(t *testing.T, l *Lab, n int) {
	t.Helper()
	until.Within(t, 30*time.Second, fmt.Sprintf("%d messages upstream", n), func() bool { return len(l.upstream()) >= n })
}

// hasBatch says whether one of msgs is a batch of readings.
func hasBatch(msgs []hubemu.Message) bool {
	for _, m := range msgs {
		if bytes.HasPrefix(m.Body, []byte("[")) {
			return true
		}
	}
	return false
}

// processesWith lists the pids whose command line contains s.
func processesWith(s string) []string {
	var pids []string
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		b, err := os.ReadFile(p)
		if err == nil && bytes.Contains(b, []byte(s)) && filepath.Base(filepath.Dir(p)) != fmt.Sprint(os.Getpid()) {
			pids = append(pids, filepath.Base(filepath.Dir(p)))
		}
	}
	return pids
}

// BenchmarkUp measures how long lab up takes until the relay's first
// message is upstream, on embedded defaults with the binaries already
// built: what a newcomer waits for.
func BenchmarkUp(b *testing.B) {
	dir := b.TempDir()
	var up, first time.Duration
	n := 0
	for b.Loop() {
		n++
		start := time.Now()
		l, err := Up(b.Context(), Config{StateDir: dir, Broker: "embedded", Rate: 100})
		if err != nil {
			b.Fatal(err)
		}
		up += time.Since(start)
		for len(l.upstream()) == 0 {
			time.Sleep(5 * time.Millisecond)
		}
		first += time.Since(start)
		if err := l.Close(); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(up.Seconds()/float64(n), "s-up")
	b.ReportMetric(first.Seconds()/float64(n), "s-first-message")
}
