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
)

// The developer loop on a running lab up (the reference simulator in this
// process, the relay as a local process, the embedded broker): the
// relay's messages reach the hub with their properties, its methods
// answer, its twin changes apply, and its log is in the state folder;
// nothing prints a secret.
func TestLabUpDeveloperLoop(t *testing.T) {
	if testing.Short() {
		t.Skip("builds edge-provisioner and edge-relay")
	}
	dir := t.TempDir()
	ctx, cancel := context.WithCancel(t.Context())
	var stdout, stderr syncBuffer
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"lab", "up", "--state-dir", dir, "--containerd", "none", "--broker", "embedded", "--names=false", "--rate", "20"}, &stdout, &stderr)
	}()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("lab up: %v\n%s", err, stderr.String())
		}
	}()

	// Wait for the relay's first message upstream.
	var out string
	deadline := time.Now().Add(3 * time.Minute)
	for {
		var err error
		out, err = cmd(t, "lab", "messages", "--state-dir", dir, "--json")
		if err == nil && strings.Contains(out, `"event"`) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no message upstream: %v\n%s\n%s", err, out, stderr.String())
		}
		time.Sleep(500 * time.Millisecond)
	}
	// The lab's own service key, as lab up wrote it.
	cs, err := os.ReadFile(filepath.Join(dir, lab.HubConnFile))
	_, key, ok := strings.Cut(strings.TrimSpace(string(cs)), "SharedAccessKey=")
	if err != nil || !ok || key == "" {
		t.Fatalf("the lab's %s: %v", lab.HubConnFile, err)
	}
	noLabKey := func(what, out string) {
		t.Helper()
		noSecrets(t, what, out)
		if strings.Contains(out, key) {
			t.Errorf("%s prints the lab's service key:\n%s", what, out)
		}
	}
	var ev monitorEventJSON
	if err := json.Unmarshal([]byte(strings.SplitN(out, "\n", 2)[0]), &ev); err != nil {
		t.Fatalf("lab messages --json: %v\n%s", err, out)
	}
	if ev.Event.Module != "relay" || ev.Event.Origin == "" || ev.Event.Properties.System["message_id"] == nil || ev.Event.Annotations["iothub-message-source"] != "Telemetry" {
		t.Errorf("lab messages: %s", out)
	}
	noLabKey("lab messages", out)

	out, err = cmd(t, "lab", "method", "--state-dir", dir, "relay", "ping")
	if err != nil || !strings.Contains(out, "status 200") || !strings.Contains(out, `"pong": true`) {
		t.Errorf("lab method relay ping: %v\n%s", err, out)
	}
	noLabKey("lab method", out)
	if out, err := cmd(t, "lab", "method", "--state-dir", dir, "relay", "nosuchmethod"); err == nil || !strings.Contains(out, "status 404") {
		t.Errorf("lab method relay nosuchmethod: %v\n%s", err, out)
	}

	out, err = cmd(t, "lab", "twin", "set", "--state-dir", dir, `{"logLevel":"debug"}`)
	if err != nil || !strings.Contains(out, "applied version") {
		t.Errorf("lab twin set: %v\n%s", err, out)
	}
	out, err = cmd(t, "lab", "twin", "show", "--state-dir", dir)
	noLabKey("lab twin show", out)
	if err != nil || !strings.Contains(out, `"logLevel": "debug"`) || !strings.Contains(out, `"reported"`) {
		t.Errorf("lab twin show: %v\n%s", err, out)
	}

	out, err = cmd(t, "lab", "logs", "--state-dir", dir, "relay")
	if err != nil || strings.TrimSpace(out) == "" {
		t.Errorf("lab logs relay: %v\n%s", err, out)
	}
	noLabKey("lab logs", out)
	noLabKey("lab up", stdout.String()+stderr.String())
}
