package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edgetpm/edgetpm/deploy/lab"
	"github.com/edgetpm/edgetpm/internal/cli"
	"github.com/edgetpm/edgetpm/internal/emulator/hubemu"
	"github.com/edgetpm/edgetpm/internal/emulator/pki"
	"github.com/edgetpm/edgetpm/internal/testharness/hubtest"
)

// cmd runs edge-deploy with args and returns its output and error.
func cmd(t *testing.T, args ...string) (string, error) {
	t.Helper()
	var out, errOut bytes.Buffer
	err := run(t.Context(), args, &out, &errOut)
	return out.String() + errOut.String(), err
}

// hubLab is a state folder as lab hub leaves it, for a hub emulator with
// a fleet of 20 devices, the first 3 of them canaries and edge-0002
// failing every deployment.
func hubLab(t *testing.T) (string, *hubtest.Fleet, *hubtest.Server) {
	t.Helper()
	f := hubtest.NewFleet(20, func(i int) map[string]any {
		if i <= 3 {
			return map[string]any{"ring": "canary"}
		}
		return map[string]any{"ring": "main"}
	}, func(d string) bool { return d == "edge-0002" })
	hub := f.Start(t, hubemu.Config{ServicePolicies: map[string][]byte{"iothubowner": ownerKey}})
	return labStateOf(t, hub), f, hub
}

// ownerKey is the iothubowner key of the tests' hubs.
var ownerKey = []byte("lab-iothubowner-key-0123456789ab")

// labStateOf writes a state folder as lab hub leaves it, for hub (whose
// service policy iothubowner has ownerKey): its service URL, connection
// string and CA.
func labStateOf(t *testing.T, hub *hubtest.Server) string {
	t.Helper()
	dir := t.TempDir()
	for name, data := range map[string]string{
		lab.HubServiceFile: hub.URL + "\n",
		lab.HubConnFile:    hub.Policy("iothubowner", ownerKey).ConnectionString() + "\n",
		pki.CertFile:       string(hub.CA.CertPEM()),
	} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// The manifests in manifests/ render, validate and roll out: a canary
// wave with a failing device halts, status shows it, rollback removes it;
// apply sets one device.
func TestRenderValidateRollout(t *testing.T) {
	lab, f, _ := hubLab(t)
	work := t.TempDir()
	dep := filepath.Join(work, "deployment.json")
	out, err := cmd(t, "render", "--template", "../manifests/deployment.base.json", "--values", "../manifests/values.example.toml",
		"--set", "relay.image=edgetpm/edge-relay:2", "--out", dep)
	if err != nil {
		t.Fatalf("render: %v\n%s", err, out)
	}
	if out, err := cmd(t, "validate", dep); err != nil || !strings.Contains(out, "ok") {
		t.Fatalf("validate: %v\n%s", err, out)
	}
	bad := filepath.Join(work, "bad.json")
	os.WriteFile(bad, []byte(`{"modulesContent":{"$edgeAgent":{"properties.desired":{"schemaVersion":"9.9"}}}}`), 0o600)
	if out, err := cmd(t, "validate", dep, bad); err == nil || !strings.Contains(out, "schemaVersion") || !strings.Contains(out, dep+": ok") {
		t.Errorf("validate of a bad file: %v\n%s", err, out)
	}

	plan := filepath.Join(work, "plan.toml")
	os.WriteFile(plan, []byte(`id = "relay-2"
deployment = "deployment.json"
priority = 20
poll = "10ms"

[[waves]]
name = "canary"
target = "tags.ring='canary'"
timeout = "2s"

[[waves]]
name = "all"
target = "tags.ring='canary' OR tags.ring='main'"
min_success = 0.9
max_failures = 1
timeout = "2s"
`), 0o600)
	// As main runs it: the halt is printed once, with how to undo it.
	var stdout, stderr bytes.Buffer
	err = run(t.Context(), []string{"rollout", "--lab", lab, "--plan", plan, "--json"}, &stdout, &stderr)
	code := cli.Report("edge-deploy", err, &stderr)
	out = stdout.String() + stderr.String()
	if err == nil || code != 1 || !strings.Contains(out, "halted") || !strings.Contains(out, "edge-deploy rollback --plan") {
		t.Fatalf("rollout with a failing canary: %v (exit %d)\n%s", err, code, out)
	}
	if n := strings.Count(stderr.String(), "rollout halted"); n != 1 {
		t.Errorf("rollout printed its error %d times, want once:\n%s", n, stderr.String())
	}
	var rep struct {
		Halted string
		Waves  []struct{ Wave, Verdict string }
	}
	if err := json.Unmarshal([]byte(out[:strings.LastIndex(out, "}")+1]), &rep); err != nil || rep.Halted != "canary" {
		t.Fatalf("report: %v\n%s", err, out)
	}
	if f.Desired("edge-0010") != nil {
		t.Error("a device outside the canary wave got the deployment")
	}
	out, err = cmd(t, "status", "--lab", lab, "--plan", plan)
	if err != nil || !strings.Contains(out, "canary") || !strings.Contains(out, "failed 1") || !strings.Contains(out, "halted at wave canary") {
		t.Errorf("status: %v\n%s", err, out)
	}
	out, err = cmd(t, "rollback", "--lab", lab, "--plan", plan, "--wave", "canary")
	if err != nil || !strings.Contains(out, "deleted configuration relay-2-canary") {
		t.Errorf("rollback: %v\n%s", err, out)
	}

	out, err = cmd(t, "apply", "--lab", lab, "--device", "edge-0010", "--deployment", dep)
	if err != nil || !strings.Contains(string(f.Desired("edge-0010")), "edgetpm/edge-relay:2") {
		t.Errorf("apply: %v\n%s\n%s", err, out, f.Desired("edge-0010"))
	}
	if out, err := cmd(t, "apply", "--lab", lab, "--device", "edge-0010", "--deployment", bad); err == nil {
		t.Errorf("apply of an invalid deployment: %s", out)
	}
	layered := filepath.Join(work, "layered.json")
	if out, err := cmd(t, "render", "--template", "../manifests/deployment.relay.layered.json", "--values", "../manifests/values.example.toml", "--out", layered); err != nil {
		t.Fatalf("render: %v\n%s", err, out)
	}
	if out, err := cmd(t, "apply", "--lab", lab, "--device", "edge-0010", "--deployment", layered); err == nil || !strings.Contains(err.Error(), "standard deployment") {
		t.Errorf("apply of a layered deployment: %v\n%s", err, out)
	}
	// A rendered deployment may hold registry credentials.
	if fi, err := os.Stat(dep); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("rendered deployment: %v, mode %v, want 0600", err, fi.Mode().Perm())
	}
}

// Without a connection string the service commands refuse with a usage
// error; the string never comes from a flag.
func TestNoConnectionString(t *testing.T) {
	t.Setenv(envConnectionString, "")
	plan := filepath.Join(t.TempDir(), "plan.toml")
	os.WriteFile(plan, []byte("id='a'\ndeployment='d.json'\n[[waves]]\nname='w'\ntarget=\"deviceId='x'\"\ntimeout='1s'\n"), 0o600)
	if out, err := cmd(t, "render", "--template", "../manifests/deployment.base.json", "--values", "../manifests/values.example.toml",
		"--out", filepath.Join(filepath.Dir(plan), "d.json")); err != nil {
		t.Fatalf("render: %v\n%s", err, out)
	}
	_, err := cmd(t, "status", "--plan", plan)
	if err == nil || !cli.IsUsage(err) || !strings.Contains(err.Error(), envConnectionString) {
		t.Errorf("status without a connection string: %v", err)
	}
	if _, err := cmd(t, "status", "--plan", plan, "--connection-string", "x"); err == nil || !cli.IsUsage(err) {
		t.Errorf("--connection-string was accepted: %v", err)
	}
	bad := filepath.Join(t.TempDir(), "plan.toml")
	os.WriteFile(bad, []byte("id='a'\ndeploymnt='d.json'\n"), 0o600)
	if _, err := cmd(t, "status", "--plan", bad); err == nil || !strings.Contains(err.Error(), `plan.toml:2:1: unknown key "deploymnt"`) {
		t.Errorf("a plan with a typo: %v", err)
	}
}

// manifests/rollout.example.toml loads, with the deployment its comment
// says to render next to it.
func TestRolloutExample(t *testing.T) {
	dir := t.TempDir()
	plan := filepath.Join(dir, "rollout.toml")
	b, err := os.ReadFile("../manifests/rollout.example.toml")
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(plan, b, 0o600)
	if out, err := cmd(t, "render", "--template", "../manifests/deployment.base.json", "--values", "../manifests/values.example.toml",
		"--out", filepath.Join(dir, "deployment.json")); err != nil {
		t.Fatalf("render: %v\n%s", err, out)
	}
	p, err := loadPlan(plan)
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Waves) != 3 || p.Waves[0].Name != "canary" || p.Waves[2].Timeout != 2*time.Hour || p.Labels["app"] != "edge-relay" {
		t.Errorf("plan = %+v", p)
	}
}
