package main

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/edgetpm/edgetpm/internal/cli"
	"github.com/edgetpm/edgetpm/internal/ekcert/ekcerttest"
	"github.com/edgetpm/edgetpm/provisioner/tpm"
)

func TestEnrollUsage(t *testing.T) {
	noEnv := func(string) string { return "" }
	for _, tc := range []struct {
		args []string
		code int
	}{
		{[]string{"--help"}, 0},
		{[]string{"show", "--help"}, 0},
		{[]string{"delete", "--help"}, 0},
		{[]string{}, 2}, // no connection string
		{[]string{"--ops-per-minute", "5", "--lab", "x"}, 2},
		{[]string{"--allocation", "random"}, 2},
		{[]string{"--allocation", "static", "--hub", "a.x", "--hub", "b.x"}, 2},
		{[]string{"--tag", "novalue"}, 2},
		{[]string{"--status", "off"}, 2},
		{[]string{"--bogus"}, 2},
		{[]string{"extra"}, 2},
		{[]string{"show"}, 2},
		{[]string{"disable", "--lab", "x"}, 2},
	} {
		var stdout, stderr bytes.Buffer
		err := enrollCmd(t.Context(), tc.args, strings.NewReader(""), &stdout, &stderr, noEnv)
		if got := cli.ExitCode(err); got != tc.code {
			t.Errorf("enroll %q = %v, exit %d, want %d", tc.args, err, got, tc.code)
		}
		if tc.code == 0 && !strings.Contains(stdout.String(), "usage: edge-deploy enroll") {
			t.Errorf("enroll %q printed no usage", tc.args)
		}
	}
	var stdout bytes.Buffer
	if err := run(t.Context(), []string{"--help"}, &stdout, &bytes.Buffer{}); err != nil || !strings.Contains(stdout.String(), "  enroll ") {
		t.Errorf("edge-deploy --help does not list enroll: %v", err)
	}
}

// identityFile writes n identities without EK certificates as JSON lines,
// and returns their registration IDs.
func identityFile(t *testing.T, n int) (string, []string) {
	t.Helper()
	var b bytes.Buffer
	var ids []string
	for range n {
		ek := softEK(t)
		id := tpm.RegistrationID(ek)
		ids = append(ids, id)
		line, _ := json.Marshal(map[string]any{"registrationId": id, "endorsementKey": base64.StdEncoding.EncodeToString(ek), "endorsementKeyCertificate": nil})
		b.Write(append(line, '\n'))
	}
	path := filepath.Join(t.TempDir(), "line-7.jsonl")
	if err := os.WriteFile(path, b.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	return path, ids
}

// enroll refuses EKs without a certificate unless allowed, enrolls them
// marked when allowed, re-runs cleanly, and never prints the connection
// string; show, disable and delete decommission.
func TestEnrollCommand(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "lab")
	l := startLab(t, "--state-dir", dir)
	file, ids := identityFile(t, 2)
	conn := strings.TrimSpace(string(readFile(t, filepath.Join(dir, "service.connstr"), 0o600)))
	env := func(k string) string {
		if k == envDPSConnectionString {
			return conn
		}
		return ""
	}
	cmd := func(args ...string) (string, error) {
		t.Helper()
		var stdout, stderr bytes.Buffer
		flags := []string{"--endpoint", l.Endpoint, "--ca-file", filepath.Join(dir, "ca.pem")}
		if args[0] == "show" || args[0] == "disable" || args[0] == "delete" {
			args = append(append([]string{args[0]}, flags...), args[1:]...)
		} else {
			args = append(flags, args...)
		}
		err := enrollCmd(t.Context(), args, strings.NewReader(""), &stdout, &stderr, env)
		key := conn[strings.Index(conn, "SharedAccessKey=")+len("SharedAccessKey="):]
		if strings.Contains(stdout.String()+stderr.String(), key) || err != nil && strings.Contains(err.Error(), key) {
			t.Errorf("enroll %q printed the service key", args)
		}
		if stderr.Len() > 0 {
			t.Errorf("enroll %q drew on stderr, not a terminal: %q", args, stderr.String())
		}
		return stdout.String(), err
	}

	out, err := cmd("--from", file)
	if cli.ExitCode(err) != 1 || strings.Count("\n"+out, "\nrefused ") != 2 || !strings.Contains(out, "no EK certificate") {
		t.Errorf("unverified EKs: %v\n%s", err, out)
	}
	out, err = cmd("show", ids[0])
	if err != nil || !strings.Contains(out, ids[0]+": not enrolled") {
		t.Errorf("show after refusal: %v\n%s", err, out)
	}

	out, err = cmd("--from", file, "--allow-unverified", "--tag", "site=plant-7", "--json")
	if err != nil {
		t.Fatalf("--allow-unverified: %v\n%s", err, out)
	}
	var rep struct {
		Identities []struct {
			Outcome string `json:"outcome"`
			EK      struct {
				Verified bool   `json:"verified"`
				Problem  string `json:"problem"`
			} `json:"ek"`
		} `json:"identities"`
		Totals     map[string]int `json:"totals"`
		Operations int            `json:"operations"`
	}
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("--json: %v\n%s", err, out)
	}
	if rep.Totals["created"] != 2 || len(rep.Identities) != 2 || rep.Identities[0].EK.Verified || rep.Identities[0].EK.Problem == "" || rep.Operations != 4 {
		t.Errorf("report %+v", rep)
	}
	out, err = cmd("--from", file, "--allow-unverified", "--tag", "site=plant-7")
	if err != nil || !strings.HasPrefix(out, "2 identities: 2 unchanged;") {
		t.Errorf("re-run: %v\n%s", err, out)
	}
	out, err = cmd("show", "--json", ids[1])
	if err != nil || !strings.Contains(out, `"ekVerified": false`) || !strings.Contains(out, `"site": "plant-7"`) {
		t.Errorf("show --json: %v\n%s", err, out)
	}

	out, err = cmd("disable", ids[0])
	if err != nil || !strings.Contains(out, "disabled  "+ids[0]) {
		t.Errorf("disable: %v\n%s", err, out)
	}
	out, err = cmd("show", ids[0])
	if err != nil || !strings.Contains(out, ids[0]+": disabled, device "+ids[0]+" (the registration ID), IoT Edge true, never registered") {
		t.Errorf("show a disabled one: %v\n%s", err, out)
	}
	// Re-running the factory file leaves the disabled device disabled.
	out, err = cmd("--from", file, "--allow-unverified", "--tag", "site=plant-7")
	if err != nil || !strings.HasPrefix(out, "2 identities: 2 unchanged;") {
		t.Errorf("re-run after disable: %v\n%s", err, out)
	}
	out, err = cmd("--from", file, "--allow-unverified", "--tag", "site=plant-7", "--edge=false", "--dry-run")
	if err != nil || !strings.Contains(out, "would be updated   "+ids[0]+" (line 1): capabilities") {
		t.Errorf("--edge=false: %v\n%s", err, out)
	}
	// A plain list of registration IDs serves show, disable and delete.
	list := filepath.Join(t.TempDir(), "ids.txt")
	os.WriteFile(list, []byte(ids[1]+"\n"), 0o600)
	out, err = cmd("disable", "--from", list, "--dry-run")
	if err != nil || !strings.Contains(out, "would be disabled  "+ids[1]) {
		t.Errorf("disable --from a list: %v\n%s", err, out)
	}
	out, err = cmd("--from", file, "--device-id", "press-1", "--allow-unverified")
	if err == nil || !strings.Contains(err.Error(), "one device ID for 2 identities") {
		t.Errorf("--device-id with 2 identities: %v\n%s", err, out)
	}
	out, err = cmd("delete", "--from", file, "--dry-run")
	if err != nil || !strings.Contains(out, "2 identities: would be 2 deleted") {
		t.Errorf("delete --dry-run: %v\n%s", err, out)
	}
	out, err = cmd("delete", "--from", file, "missing-one")
	if err != nil || !strings.Contains(out, "3 identities: 2 deleted, 1 absent") {
		t.Errorf("delete: %v\n%s", err, out)
	}

	// A genuine EK from a manufacturer that is not built in is enrolled
	// once the operator trusts its root.
	ca := ekcerttest.NewCA(t)
	k := ekcerttest.RSAKey(t)
	ek := ekcerttest.TPMPublic(t, &k.PublicKey)
	pemOf := func(der []byte) string {
		return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
	}
	cert := ca.Issue(&k.PublicKey)
	line, _ := json.Marshal(map[string]any{
		"registrationId": tpm.RegistrationID(ek), "endorsementKey": base64.StdEncoding.EncodeToString(ek),
		"endorsementKeyCertificate": pemOf(cert), "endorsementKeyCertificateChain": []string{pemOf(ca.Intermediate.Raw)},
	})
	genuine, root := filepath.Join(t.TempDir(), "genuine.json"), filepath.Join(t.TempDir(), "root.pem")
	os.WriteFile(genuine, line, 0o600)
	os.WriteFile(root, ca.RootPEM(), 0o644)
	out, err = cmd("--from", genuine)
	if cli.ExitCode(err) != 1 || !strings.Contains(out, "refused") {
		t.Errorf("an untrusted manufacturer: %v\n%s", err, out)
	}
	out, err = cmd("--from", genuine, "--ek-ca", root)
	if err != nil || !strings.Contains(out, "created   "+tpm.RegistrationID(ek)+" (line 1) [Infineon SLB9672, operator CA "+ca.Root.Subject.String()+"]") {
		t.Errorf("--ek-ca: %v\n%s", err, out)
	}
	// The same from a CSV, with a device ID: an update, in a dry run.
	csv := filepath.Join(t.TempDir(), "line-7.csv")
	os.WriteFile(csv, []byte("registrationId,endorsementKey,endorsementKeyCertificate,endorsementKeyCertificateChain,deviceId\n"+
		tpm.RegistrationID(ek)+","+base64.StdEncoding.EncodeToString(ek)+","+base64.StdEncoding.EncodeToString(cert)+",\""+pemOf(ca.Intermediate.Raw)+"\",press-9\n"), 0o600)
	out, err = cmd("--from", csv, "--ek-ca", root, "--dry-run")
	if err != nil || !strings.Contains(out, "would be updated   "+tpm.RegistrationID(ek)+" (line 2): deviceId [Infineon SLB9672, operator CA "+ca.Root.Subject.String()+"]") {
		t.Errorf("CSV --dry-run: %v\n%s", err, out)
	}
}

// The service SAS token, valid an hour with the full policy's rights,
// goes only over TLS to the DPS the connection string names, or to a
// loopback address (the lab, an emulator).
func TestCheckEndpoint(t *testing.T) {
	const host = "plant7.azure-devices-provisioning.net"
	for _, tc := range []struct {
		endpoint, err string
	}{
		{"", ""},
		{"https://plant7.azure-devices-provisioning.net", ""},
		{"https://PLANT7.azure-devices-provisioning.net:443/", ""},
		{"https://127.0.0.1:8443", ""},
		{"https://localhost:8443", ""},
		{"https://[::1]:8443", ""},
		{"http://plant7.azure-devices-provisioning.net", "https"},
		{"http://127.0.0.1:8080", "https"},
		{"plant7.azure-devices-provisioning.net", "https"},
		{"https://other.azure-devices-provisioning.net", "not the connection string's"},
		{"https://plant7.azure-devices-provisioning.net.evil.example", "not the connection string's"},
		{"https://10.0.0.5", "not the connection string's"},
		{"https://user@plant7.azure-devices-provisioning.net", "user"},
		{"https://plant7.azure-devices-provisioning.net/?x=1", "query"},
	} {
		err := checkEndpoint(tc.endpoint, host)
		if (tc.err == "") != (err == nil) || err != nil && !strings.Contains(err.Error(), tc.err) {
			t.Errorf("checkEndpoint(%q) = %v, want %q", tc.endpoint, err, tc.err)
		}
	}
}
