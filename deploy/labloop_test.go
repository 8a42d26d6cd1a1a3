package main

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edgetpm/edgetpm/deploy/lab"
	"github.com/edgetpm/edgetpm/internal/cli"
	"github.com/edgetpm/edgetpm/internal/emulator/hubemu"
	"github.com/edgetpm/edgetpm/internal/emulator/registry"
	"github.com/edgetpm/edgetpm/internal/sas"
	"github.com/edgetpm/edgetpm/internal/testharness/hubtest"
	"github.com/edgetpm/edgetpm/module/edgehub"
)

// loopLab is a lab state folder for a hub emulator that knows edge1/relay,
// routes the relay's output "telemetry" to $upstream, and has edge1 in
// its registry.
func loopLab(t *testing.T) (string, *hubtest.Server) {
	t.Helper()
	hub := hubtest.Start(t, hubemu.Config{
		Key:             hubtest.Keys(map[string][]byte{"edge1/relay": loopModuleKey, "edge1": make([]byte, 32)}),
		ServicePolicies: map[string][]byte{"iothubowner": ownerKey},
		Routes:          map[string]string{"up": `FROM /messages/modules/relay/outputs/telemetry INTO $upstream`},
	})
	dir := labStateOf(t, hub)
	reg, err := registry.New(filepath.Join(dir, lab.RegistryFile))
	if err != nil {
		t.Fatal(err)
	}
	if err := reg.Put(registry.Device{Hub: hub.HubHostName(), DeviceID: "edge1", PrimaryKey: make([]byte, 32), Created: time.Now()}); err != nil {
		t.Fatal(err)
	}
	return dir, hub
}

var loopModuleKey = []byte("relay-module-key-0123456789abcdef")

// connectRelay connects a module session as edge1/relay, answering
// methods with method, until the test ends.
func connectRelay(t *testing.T, hub *hubtest.Server, method func(ctx context.Context, name string, payload []byte) (int, []byte)) *edgehub.Session {
	t.Helper()
	connected := make(chan struct{}, 1)
	sess, err := edgehub.New(edgehub.Config{
		Identity:  edgehub.Identity{HubHostName: hub.HubHostName(), DeviceID: "edge1", ModuleID: "relay", Host: hub.GatewayHostName(), Address: hub.Addr},
		Signer:    sas.Key(loopModuleKey),
		RootCAs:   hub.Pool,
		Method:    method,
		Connected: func(context.Context) { connected <- struct{}{} },
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() { sess.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	select {
	case <-connected:
	case <-time.After(20 * time.Second):
		t.Fatal("the relay session did not connect")
	}
	return sess
}

// noSecrets fails when out quotes the lab's service key or a SAS token.
func noSecrets(t *testing.T, what, out string) {
	t.Helper()
	for _, s := range []string{"SharedAccessSignature", "sig=", "SharedAccessKey", string(ownerKey), string(loopModuleKey)} {
		if strings.Contains(out, s) {
			t.Errorf("%s prints %q:\n%s", what, s, out)
		}
	}
}

// lab method invokes a direct method on the module through the hub's
// service API and prints its answer; a module that is not connected is
// IoT Hub's 404 DeviceNotOnline and a failure.
func TestLabMethod(t *testing.T) {
	dir, hub := loopLab(t)
	args := func(a ...string) []string {
		return append([]string{"lab", "method", "--state-dir", dir, "--hub", hub.HubHostName()}, a...)
	}
	out, err := cmd(t, args("relay", "ping")...)
	if err == nil || !strings.Contains(err.Error(), "not connected") || !strings.Contains(err.Error(), "DeviceNotOnline") {
		t.Errorf("method on a module not connected: %v\n%s", err, out)
	}
	noSecrets(t, "lab method (offline)", out+errString(err))

	var got struct {
		name    string
		payload string
	}
	calls := make(chan struct{}, 4)
	connectRelay(t, hub, func(_ context.Context, name string, payload []byte) (int, []byte) {
		got.name, got.payload = name, string(payload)
		calls <- struct{}{}
		if name == "fail" {
			return 500, []byte(`{"error":"broken"}`)
		}
		return 200, []byte(`{"pong":` + string(payload) + `}`)
	})
	out, err = cmd(t, args("relay", "ping", `{"n":1}`)...)
	if err != nil || !strings.Contains(out, "status 200") || !strings.Contains(out, `"pong": {`) || !strings.Contains(out, `"n": 1`) {
		t.Errorf("lab method ping: %v\n%s", err, out)
	}
	<-calls
	if got.name != "ping" || got.payload != `{"n":1}` {
		t.Errorf("the module got %q %s, want ping {\"n\":1}", got.name, got.payload)
	}
	noSecrets(t, "lab method", out)

	out, err = cmd(t, args("--json", "relay", "ping", "hello")...)
	var r struct {
		Status  int             `json:"status"`
		Payload json.RawMessage `json:"payload"`
	}
	if err != nil || json.Unmarshal([]byte(out), &r) != nil || r.Status != 200 || string(r.Payload) != `{"pong":"hello"}` {
		t.Errorf("lab method --json with a text payload: %v\n%s", err, out)
	}
	<-calls

	out, err = cmd(t, args("relay", "fail")...)
	if err == nil || !strings.Contains(err.Error(), "status 500") || !strings.Contains(out, "broken") {
		t.Errorf("a method answering 500: %v\n%s", err, out)
	}
	<-calls

	for _, bad := range [][]string{{"relay"}, {"--timeout", "1s", "relay", "ping"}, {"--timeout", "10m", "relay", "ping"}, {"relay", "ping", "{}", "extra"}} {
		if _, err := cmd(t, args(bad...)...); !cli.IsUsage(err) {
			t.Errorf("lab method %q: %v, want a usage error", bad, err)
		}
	}
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// lab messages prints what reached $upstream in az iot hub
// monitor-events' shape, with system and application properties, and
// --follow prints what arrives next.
func TestLabMessages(t *testing.T) {
	dir, hub := loopLab(t)
	sess := connectRelay(t, hub, nil)
	send := func(body, id string) {
		t.Helper()
		ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
		defer cancel()
		if err := sess.Publish(ctx, "telemetry", &edgehub.Message{Body: []byte(body), ID: id, CorrelationID: "c-" + id,
			ContentType: "application/json", ContentEncoding: "utf-8", Properties: map[string]string{"sensor": "s1"}}); err != nil {
			t.Fatal(err)
		}
	}
	send(`{"t":21.5}`, "m1")
	if _, err := hub.WaitUpstream(t.Context(), 1); err != nil {
		t.Fatal(err)
	}
	out, err := cmd(t, "lab", "messages", "--state-dir", dir)
	if err != nil {
		t.Fatalf("lab messages: %v\n%s", err, out)
	}
	var ev monitorEventJSON
	if err := json.Unmarshal([]byte(out), &ev); err != nil {
		t.Fatalf("lab messages output: %v\n%s", err, out)
	}
	e := ev.Event
	if e.Origin != "edge1" || e.Module != "relay" || e.Properties.System["message_id"] != "m1" || e.Properties.System["correlation_id"] != "c-m1" ||
		e.Properties.System["content_type"] != "application/json" || e.Properties.Application["sensor"] != "s1" ||
		e.Annotations["iothub-connection-module-id"] != "relay" || e.Annotations["iothub-message-source"] != "Telemetry" {
		t.Errorf("lab messages = %s", out)
	}
	if p, ok := e.Payload.(map[string]any); !ok || p["t"] != 21.5 {
		t.Errorf("payload = %#v, want the JSON body", e.Payload)
	}
	if !strings.Contains(out, "\n    \"event\": {") {
		t.Errorf("lab messages is not indented as az prints it:\n%s", out)
	}
	noSecrets(t, "lab messages", out)

	// --follow --json: the message there, then one sent later.
	ctx, cancel := context.WithCancel(t.Context())
	var buf syncBuffer
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"lab", "messages", "--state-dir", dir, "--follow", "--json"}, &buf, &buf)
	}()
	time.Sleep(300 * time.Millisecond)
	send(`not json`, "m2")
	deadline := time.Now().Add(20 * time.Second)
	for strings.Count(buf.String(), "\n") < 2 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("lab messages --follow ended with %v", err)
	}
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 2 || !strings.Contains(lines[0], `"message_id":"m1"`) || !strings.Contains(lines[1], `"message_id":"m2"`) || !strings.Contains(lines[1], `"payload":"not json"`) {
		t.Errorf("lab messages --follow --json =\n%s", buf.String())
	}

	if out, err := cmd(t, "lab", "messages", "--state-dir", dir, "--module", "other"); err != nil || strings.TrimSpace(out) != "" {
		t.Errorf("lab messages --module other: %v\n%s", err, out)
	}
}

// lab logs prints logs/MODULE.log and follows it.
func TestLabLogs(t *testing.T) {
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "logs"), 0o700); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "logs", "relay.log")
	if err := os.WriteFile(path, []byte("<6> one\n<6> two\n<6> three\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := cmd(t, "lab", "logs", "--state-dir", dir, "relay"); err != nil || out != "<6> one\n<6> two\n<6> three\n" {
		t.Errorf("lab logs relay = %q, %v", out, err)
	}
	if out, err := cmd(t, "lab", "logs", "--state-dir", dir, "--tail", "1", "relay"); err != nil || out != "<6> three\n" {
		t.Errorf("lab logs --tail 1 relay = %q, %v", out, err)
	}
	if _, err := cmd(t, "lab", "logs", "--state-dir", dir, "sensor"); err == nil || !strings.Contains(err.Error(), "relay") {
		t.Errorf("lab logs of a module without a log: %v, want the modules that have one", err)
	}
	for _, bad := range []string{"../relay", ""} {
		if _, err := cmd(t, "lab", "logs", "--state-dir", dir, bad); !cli.IsUsage(err) {
			t.Errorf("lab logs %q: %v, want a usage error", bad, err)
		}
	}

	ctx, cancel := context.WithCancel(t.Context())
	var buf syncBuffer
	done := make(chan error, 1)
	go func() { done <- run(ctx, []string{"lab", "logs", "--state-dir", dir, "--follow", "relay"}, &buf, &buf) }()
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	f.WriteString("<4> four\n")
	f.Close()
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(buf.String(), "four") && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil || buf.String() != "<6> one\n<6> two\n<6> three\n<4> four\n" {
		t.Errorf("lab logs --follow = %q, %v", buf.String(), err)
	}
}

// lab twin set takes the patch as JSON, a FILE or standard input too, and
// sets device twins with --module ""; lab twin show prints the twin.
func TestLabTwinPatchAndShow(t *testing.T) {
	dir, hub := loopLab(t)
	base := []string{"--state-dir", dir, "--hub", hub.HubHostName()}
	set := func(a ...string) (string, error) {
		return cmd(t, append(append([]string{"lab", "twin", "set", "--wait", "0"}, base...), a...)...)
	}
	if out, err := set(`{"logLevel":"debug","batching":{"enabled":true}}`); err != nil || !strings.Contains(out, "edge1/relay at version 2") {
		t.Errorf("lab twin set JSON: %v\n%s", err, out)
	}
	file := filepath.Join(t.TempDir(), "patch.json")
	if err := os.WriteFile(file, []byte(`{"batching":{"enabled":null},"inFlight":8}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := set(file); err != nil || !strings.Contains(out, "version 3") {
		t.Errorf("lab twin set FILE: %v\n%s", err, out)
	}
	if out, err := set("--module", "", `{"site":"lab"}`); err != nil || !strings.Contains(out, "desired properties of edge1 at version") {
		t.Errorf("lab twin set --module '' (the device twin): %v\n%s", err, out)
	}

	out, err := cmd(t, append([]string{"lab", "twin", "show"}, base...)...)
	var tw struct {
		DeviceID   string `json:"deviceId"`
		ModuleID   string `json:"moduleId"`
		Properties struct {
			Desired map[string]any `json:"desired"`
		} `json:"properties"`
	}
	if err != nil || json.Unmarshal([]byte(out), &tw) != nil || tw.ModuleID != "relay" || tw.Properties.Desired["logLevel"] != "debug" ||
		tw.Properties.Desired["inFlight"] != 8.0 || strings.Contains(out, "enabled") {
		t.Errorf("lab twin show: %v %+v\n%s", err, tw, out)
	}
	noSecrets(t, "lab twin show", out)
	// --etag: If-Match with the twin's ETag; a stale one is refused.
	var shown struct {
		ETag string `json:"etag"`
	}
	if json.Unmarshal([]byte(out), &shown); shown.ETag == "" {
		t.Fatalf("lab twin show has no etag:\n%s", out)
	}
	if out, err := set("--etag", shown.ETag, "logLevel=info"); err != nil || !strings.Contains(out, "version 4") {
		t.Errorf("lab twin set --etag (current): %v\n%s", err, out)
	}
	if out, err := set("--etag", shown.ETag, "logLevel=warn"); err == nil || !strings.Contains(err.Error(), "changed since ETag") || !strings.Contains(err.Error(), "412") {
		t.Errorf("lab twin set --etag (stale): %v\n%s", err, out)
	}
	if tw, err := hub.Twin("edge1", "relay"); err != nil || !strings.Contains(string(tw.Desired), `"logLevel":"info"`) {
		t.Errorf("desired after a stale --etag = %s, %v", tw.Desired, err)
	}

	out, err = cmd(t, append([]string{"lab", "twin", "show", "--module", ""}, base...)...)
	if err != nil || !strings.Contains(out, `"site": "lab"`) || strings.Contains(out, "moduleId") {
		t.Errorf("lab twin show --module '': %v\n%s", err, out)
	}

	for _, bad := range [][]string{{`{"a":1}`, "b=2"}, {`[1,2]`}, {`{nope`}, {"=x"}} {
		if _, err := set(bad...); !cli.IsUsage(err) {
			t.Errorf("lab twin set %q: %v, want a usage error", bad, err)
		}
	}
	if _, err := set(filepath.Join(t.TempDir(), "missing.json")); !cli.IsUsage(err) {
		t.Errorf("lab twin set of a missing FILE: %v, want a usage error", err)
	}
	if _, err := set(t.TempDir()); err == nil || cli.IsUsage(err) {
		t.Errorf("lab twin set of a folder: %v, want a read error", err)
	}
	if p, err := desiredPatch([]string{"-"}, strings.NewReader(`{"x":{"y":1}}`)); err != nil || p["x"].(map[string]any)["y"] != 1.0 {
		t.Errorf("desiredPatch(-) = %v, %v", p, err)
	}
	if _, err := desiredPatch([]string{"-"}, strings.NewReader(`{"x":"`+strings.Repeat("a", maxPatch)+`"}`)); !cli.IsUsage(err) {
		t.Errorf("desiredPatch of a patch over 32 KB: %v, want a usage error", err)
	}
}
