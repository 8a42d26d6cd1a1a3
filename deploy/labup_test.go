package main

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/edgetpm/edgetpm/deploy/lab"
	"github.com/edgetpm/edgetpm/internal/cli"
)

// lab up as the README's main command runs it, on embedded defaults (the
// reference simulator in this process, the relay as a local process, the
// embedded broker), with --duration and --json for a script.
func TestLabUp(t *testing.T) {
	if testing.Short() {
		t.Skip("builds edge-provisioner and edge-relay")
	}
	var stdout, stderr syncBuffer
	err := run(t.Context(), []string{"lab", "up", "--state-dir", t.TempDir(), "--containerd", "none", "--broker", "embedded", "--names=false",
		"--rate", "50", "--duration", "3s", "--json"}, &stdout, &stderr)
	if err != nil {
		t.Fatalf("lab up: %v\n%s", err, stderr.String())
	}
	var s map[string]any
	if err := json.Unmarshal([]byte(stdout.String()), &s); err != nil {
		t.Fatalf("lab up --json printed %q: %v", stdout.String(), err)
	}
	for _, k := range []string{"registrationId", "assignedHub", "deviceId", "messagesRelayed", "messagesAcknowledged", "twinVersionApplied"} {
		if _, ok := s[k]; !ok {
			t.Errorf("the summary lacks %s: %v", k, s)
		}
	}
	if s["assignedHub"] != lab.Hub || s["deviceId"] != s["registrationId"] || s["twinVersionApplied"] != 2.0 {
		t.Errorf("summary %v: want the lab hub, the registration ID as device ID and desired version 2 applied", s)
	}
	if p, _ := s["messagesPublished"].(float64); p < 50 || s["messagesRelayed"] != p || s["messagesAcknowledged"] != p || s["messagesUpstream"] != p {
		t.Errorf("summary %v: want every published reading relayed, acknowledged and upstream", s)
	}
	for _, part := range []string{"tpm", "dps", "enroll", "hub", "provision", "broker", "runtime", "workload", "relay", "twin", "sensor"} {
		if !strings.Contains(stderr.String(), "\n"+part+" ") {
			t.Errorf("no progress line for %s:\n%s", part, stderr.String())
		}
	}
}

func TestLabUpUsage(t *testing.T) {
	for _, args := range [][]string{
		{"--rate", "0"},
		{"--rate", "x"},
		{"extra"},
	} {
		var stdout, stderr syncBuffer
		err := run(t.Context(), append([]string{"lab", "up"}, args...), &stdout, &stderr)
		if !cli.IsUsage(err) {
			t.Errorf("lab up %q = %v, want a usage error", args, err)
		}
	}
}
