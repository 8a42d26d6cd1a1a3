package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"runtime/debug"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/edgetpm/edgetpm/internal/assignment"
	"github.com/edgetpm/edgetpm/internal/cli"
	"github.com/edgetpm/edgetpm/internal/emulator/hubemu"
	"github.com/edgetpm/edgetpm/internal/emulator/workloademu"
	"github.com/edgetpm/edgetpm/internal/testharness/hubtest"
	"github.com/edgetpm/edgetpm/internal/testharness/syncbuf"
	"github.com/edgetpm/edgetpm/internal/testharness/until"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var relayKey = []byte("relay-module-key-0123456789abcdef")

// syncBuffer is written by one goroutine and read by the test.
type syncBuffer = syncbuf.Buffer

// edge is an IoT Edge device in the small: the hub emulator as edgeHub,
// the workload API on a unix socket, and edge-relay started as IoT Edge
// starts a module, with its environment.
type edge struct {
	hub  *hubtest.Server
	log  *syncBuffer
	data string
	stop func() error
}

func startEdge(t *testing.T, args ...string) *edge {
	t.Helper()
	hub := hubtest.Start(t, hubemu.Config{
		Key: hubtest.Keys(map[string][]byte{"edge1/relay": relayKey}),
		Routes: map[string]string{
			"up": `FROM /messages/modules/relay/outputs/* INTO $upstream`,
		},
	})
	wl, err := workloademu.New(workloademu.Config{
		Key: func(m string) ([]byte, bool) { return relayKey, m == "relay" },
		// The hub's server certificate is issued by this CA: IoT Edge's
		// trust bundle holds the Edge CA that issued edgeHub's.
		TrustBundle: hub.CA.CertPEM(),
	})
	if err != nil {
		t.Fatal(err)
	}
	dir, err := os.MkdirTemp("", "relay")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	sock := filepath.Join(dir, "workload.sock")
	ctx, cancel := context.WithCancel(context.Background())
	wlDone := make(chan error, 1)
	go func() { wlDone <- wl.Serve(ctx, sock) }()
	for i := 0; i < 100; i++ {
		if _, err := os.Stat(sock); err == nil {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	environ := map[string]string{
		"IOTEDGE_WORKLOADURI": "unix://" + sock, "IOTEDGE_AUTHSCHEME": "sasToken", "IOTEDGE_MODULEGENERATIONID": "1",
		"IOTEDGE_IOTHUBHOSTNAME": hub.HubHostName(), "IOTEDGE_GATEWAYHOSTNAME": hub.GatewayHostName(),
		"IOTEDGE_DEVICEID": "edge1", "IOTEDGE_MODULEID": "relay", "IOTEDGE_APIVERSION": "2022-08-03",
		"EDGE_RELAY_HUB_ADDRESS": hub.Addr,
	}
	e := &edge{hub: hub, log: &syncBuffer{}, data: filepath.Join(dir, "data")}
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, append([]string{"--metrics-addr", "127.0.0.1:0", "--data", e.data}, args...), nil, e.log, func(k string) string { return environ[k] })
	}()
	e.stop = func() error {
		cancel()
		err := <-done
		if werr := <-wlDone; werr != nil && err == nil {
			err = werr
		}
		return err
	}
	t.Cleanup(func() {
		if err := e.stop(); err != nil {
			t.Errorf("edge-relay: %v", err)
		}
	})
	until.True(t, "the relay to connect", func() bool { return hub.Connected("edge1", "relay") })
	return e
}

// reported reads the module twin's reported "configuration".
func reported(t *testing.T, hub *hubtest.Server) map[string]any {
	t.Helper()
	tw, err := hub.Twin("edge1", "relay")
	if err != nil {
		t.Fatal(err)
	}
	var r struct {
		Configuration map[string]any `json:"configuration"`
	}
	json.Unmarshal(tw.Reported, &r)
	return r.Configuration
}

func TestModule(t *testing.T) {
	e := startEdge(t)
	ctx := t.Context()

	// The twin is applied on connect and reported.
	until.True(t, "the first report", func() bool { return reported(t, e.hub) != nil })
	if _, err := e.hub.UpdateDesired("edge1", "relay", json.RawMessage(`{"output":"plant","logLevel":"debug"}`)); err != nil {
		t.Fatal(err)
	}
	until.True(t, "the desired patch applied", func() bool { c := reported(t, e.hub); return c["status"] == "applied" && c["version"] == 2.0 })
	if counters, ok := reported(t, e.hub)["counters"].(map[string]any); !ok || counters["logLevel"] != "debug" {
		t.Errorf("reported counters = %v", reported(t, e.hub)["counters"])
	}

	// Inputs go out on the configured output with their $.mid.
	for i := range 5 {
		err := e.hub.SendToInput(ctx, "edge1", "relay", "readings", hubemu.Message{Body: []byte(fmt.Sprint(i)), System: map[string]string{"$.mid": fmt.Sprint("r", i)}})
		if err != nil {
			t.Fatal(err)
		}
	}
	up, err := e.hub.WaitUpstream(ctx, 5)
	if err != nil {
		t.Fatal(err)
	}
	for i, m := range up {
		if m.Output != "plant" || m.System["$.mid"] != fmt.Sprint("r", i) || m.Properties["input"] != "readings" {
			t.Errorf("upstream[%d] = %+v", i, m)
		}
	}

	// An invalid document is rejected and the old configuration stays.
	if _, err := e.hub.UpdateDesired("edge1", "relay", json.RawMessage(`{"queue":{"whenFull":"explode"}}`)); err != nil {
		t.Fatal(err)
	}
	until.True(t, "the rejection", func() bool { return reported(t, e.hub)["status"] == "rejected" })
	if eff := reported(t, e.hub)["effective"].(map[string]any); eff["output"] != "plant" {
		t.Errorf("effective after a rejected document = %v", eff)
	}

	// Direct methods.
	for _, tc := range []struct {
		method, payload string
		status          int
		want            string
	}{
		{"ping", `{}`, 200, `"pong":true`},
		{"stats", ``, 200, `"acknowledged":5`},
		{"flush", ``, 200, `"flushed"`},
		{"setLogLevel", `{"level":"warn"}`, 200, `"level":"warn"`},
		{"setLogLevel", `{"level":"loud"}`, 400, `level must be`},
		{"setLogLevel", `nonsense`, 400, `want`},
		{"reboot", `{}`, 404, `no method reboot`},
	} {
		payload := json.RawMessage(tc.payload)
		if tc.payload == "" {
			payload = nil
		}
		status, resp, err := e.hub.InvokeMethod(ctx, "edge1", "relay", tc.method, payload, 5*time.Second)
		if err != nil || status != tc.status || !strings.Contains(string(resp), tc.want) {
			t.Errorf("%s(%s) = %d %s %v; want %d with %s", tc.method, tc.payload, status, resp, err, tc.status, tc.want)
		}
	}

	// The log is in IoT Edge's format, and no token reached it.
	log := e.log.String()
	if !regexp.MustCompile(`(?m)^<6> \d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} \+00:00 connected`).MatchString(log) {
		t.Errorf("log lines are not in the IoT Edge format:\n%s", log)
	}
	if strings.Contains(log, "sig=") || strings.Contains(log, "SharedAccessSignature") {
		t.Errorf("the log shows a token:\n%s", log)
	}

	// The last good configuration is kept for an offline start.
	b, err := os.ReadFile(filepath.Join(e.data, "desired.json"))
	if err != nil || !strings.Contains(string(b), `"output":"plant"`) {
		t.Errorf("kept configuration = %s, %v", b, err)
	}
	if fi, err := os.Stat(filepath.Join(e.data, "desired.json")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("kept configuration mode = %v, %v; want 0600", fi.Mode(), err)
	}
}

// Desired patches made while the module is away are applied when it is
// back: the twin is fetched again on every connect.
func TestDesiredWhileOffline(t *testing.T) {
	e := startEdge(t)
	until.True(t, "the first report", func() bool { return reported(t, e.hub) != nil })
	e.hub.RefuseConnects(time.Second)
	e.hub.DropAll()
	until.True(t, "the relay to drop", func() bool { return !e.hub.Connected("edge1", "relay") })
	if _, err := e.hub.UpdateDesired("edge1", "relay", json.RawMessage(`{"output":"offline1"}`)); err != nil {
		t.Fatal(err)
	}
	if _, err := e.hub.UpdateDesired("edge1", "relay", json.RawMessage(`{"logLevel":"warn"}`)); err != nil {
		t.Fatal(err)
	}
	until.True(t, "the offline patches applied", func() bool {
		c := reported(t, e.hub)
		eff, _ := c["effective"].(map[string]any)
		return c["status"] == "applied" && eff["output"] == "offline1" && eff["logLevel"] == "warn"
	})
}

func TestUsage(t *testing.T) {
	err := run(t.Context(), []string{"--data", t.TempDir()}, nil, &syncBuffer{}, func(string) string { return "" })
	if cli.ExitCode(err) != 2 || !strings.Contains(err.Error(), "IOTEDGE_WORKLOADURI") {
		t.Errorf("edge-relay without an environment = %v (exit %d), want a usage error naming what is missing", err, cli.ExitCode(err))
	}
	for _, args := range [][]string{{"--token-ttl", "10ms"}, {"--bogus"}, {"extra"}} {
		if err := run(t.Context(), args, nil, nil, func(string) string { return "" }); cli.ExitCode(err) != 2 {
			t.Errorf("edge-relay %q = %v (exit %d), want a usage error", args, err, cli.ExitCode(err))
		}
	}
	var stdout syncBuffer
	err = run(t.Context(), []string{"--help"}, &stdout, nil, func(string) string { return "" })
	if cli.ExitCode(err) != 0 || !strings.Contains(stdout.String(), "usage: edge-relay") || !strings.Contains(stdout.String(), cli.ExitStatus) {
		t.Errorf("edge-relay --help = %v, stdout:\n%s", err, stdout.String())
	}
}

// A TPM or workload API that fails is a failure (exit 1), not a usage
// error: the command line and environment were right.
func TestConnectionFailure(t *testing.T) {
	dir := t.TempDir()
	state := filepath.Join(dir, "assignment.json")
	if err := assignment.Save(state, &assignment.Assignment{
		IDScope: "0ne00000001", Endpoint: "https://global.azure-devices-provisioning.net", RegistrationID: "press-7",
		AssignedHub: "hub.example", DeviceID: "press-7", AssignedAt: time.Now().UTC(),
		TPM: "device:" + filepath.Join(dir, "tpmrm0"), AuthKeyHandle: 0x81000100,
	}); err != nil {
		t.Fatal(err)
	}
	// A workload API that refuses this module: an answer, so not retried.
	sock := filepath.Join(dir, "workload.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusForbidden)
		io.WriteString(w, `{"message":"module relay is not known"}`)
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	workloadEnv := map[string]string{
		"IOTEDGE_WORKLOADURI": "unix://" + sock, "IOTEDGE_AUTHSCHEME": "sasToken", "IOTEDGE_MODULEGENERATIONID": "1",
		"IOTEDGE_IOTHUBHOSTNAME": "hub.example", "IOTEDGE_GATEWAYHOSTNAME": "gateway", "IOTEDGE_DEVICEID": "edge1", "IOTEDGE_MODULEID": "relay",
	}
	for _, tc := range []struct {
		name    string
		args    []string
		environ map[string]string
	}{
		{"tpm", []string{"--device-state", state}, nil},
		{"workload API", nil, workloadEnv},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := append([]string{"--data", t.TempDir(), "--metrics-addr", "127.0.0.1:0"}, tc.args...)
			err := run(t.Context(), args, nil, &syncBuffer{}, func(k string) string { return tc.environ[k] })
			if err == nil || cli.ExitCode(err) != 1 {
				t.Errorf("edge-relay %q = %v (exit %d), want a failure, exit 1", args, err, cli.ExitCode(err))
			}
		})
	}
}

func writeFile(t testing.TB, path string, b []byte) {
	t.Helper()
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// Unless the environment sets them, the relay runs with GOGC 400 under a
// soft memory limit of 256 MiB; what the environment sets stays.
func TestTuneRuntime(t *testing.T) {
	gc, limit := debug.SetGCPercent(100), debug.SetMemoryLimit(math.MaxInt64)
	t.Cleanup(func() { debug.SetGCPercent(gc); debug.SetMemoryLimit(limit) })
	for _, tt := range []struct {
		env   map[string]string
		gc    int
		limit int64
	}{
		{nil, 400, 256 << 20},
		{map[string]string{"GOGC": "100"}, 100, 256 << 20},
		{map[string]string{"GOMEMLIMIT": "1GiB"}, 400, math.MaxInt64},
	} {
		debug.SetGCPercent(100)
		debug.SetMemoryLimit(math.MaxInt64)
		tuneRuntime(func(k string) string { return tt.env[k] })
		got, lim := debug.SetGCPercent(100), debug.SetMemoryLimit(math.MaxInt64)
		if got != tt.gc || lim != tt.limit {
			t.Errorf("tuneRuntime with %v: GOGC %d, limit %d; want %d, %d", tt.env, got, lim, tt.gc, tt.limit)
		}
	}
}
