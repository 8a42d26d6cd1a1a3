package azureclients

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/rs/zerolog"

	"github.com/edgetpm/edgetpm/deploy/lab"
	"github.com/edgetpm/edgetpm/internal/atomicfile"
	"github.com/edgetpm/edgetpm/internal/dpsservice"
	"github.com/edgetpm/edgetpm/internal/emulator/pki"
	"github.com/edgetpm/edgetpm/internal/testharness/tpmtest"
)

// Azure's Node.js DPS service client (azure-iot-provisioning-service),
// built from the lab's service.connstr as the lab wrote it, enrolls a TPM
// with the lab's DPS: the connection string's host name resolves through
// the lab's /etc/hosts lines, DPS serves it on port 443 with the name in
// its certificate, and Node trusts the lab CA through NODE_EXTRA_CA_CERTS,
// verifying TLS. The enrollment it made is the one the emulator holds, and
// Azure's Node.js device client then registers the TPM with it at the same
// name; the service client deletes it at the end.
func TestNodeServiceClientEnrollsWithLab(t *testing.T) {
	if testing.Short() {
		t.Skip("installs the Azure Node.js SDK with npm")
	}
	stateDir, ca, err := lab.OpenState(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	d, err := lab.StartDPS(stateDir, ca, lab.DPSConfig{RetryAfter: 1, Named: true, Log: zerolog.New(zerolog.NewTestWriter(t))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := d.Close(); err != nil {
			t.Errorf("stop the lab's DPS: %v", err)
		}
	})
	if d.NamedErr != nil {
		skipOrFail(t, "the lab's DPS cannot serve at its name: %v", d.NamedErr)
	}
	names, err := lab.Names(stateDir)
	if err != nil {
		t.Fatal(err)
	}
	writeLabHosts(t, names)
	nodeDir := installNodeClient(t)
	for _, name := range names {
		checkResolves(t, name, lab.LoopbackAddr(name).String())
	}

	tpmURI := tpmtest.StartSim(t)
	_, tpmPort, _ := net.SplitHostPort(strings.TrimPrefix(tpmURI, "mssim://"))
	service := d.ConnectionString().HostName
	const deviceID = "node-service-device"
	env := []string{
		"TPM_HOST=127.0.0.1",
		"TPM_PORT=" + tpmPort,
		"CONNSTR_FILE=" + filepath.Join(stateDir, lab.DPSConnFile),
		"DEVICE_ID=" + deviceID,
		"NODE_EXTRA_CA_CERTS=" + filepath.Join(stateDir, pki.CertFile),
		"DEBUG=azure-iot-provisioning-service*,azure-iot-http-base*",
	}
	var id struct {
		RegistrationID string `json:"registrationId"`
		EndorsementKey []byte `json:"endorsementKey"`
	}
	runNode(t, nodeDir, env, "identity", &id)
	env = append(env, "REGISTRATION_ID="+id.RegistrationID, "ENDORSEMENT_KEY="+base64.StdEncoding.EncodeToString(id.EndorsementKey))

	var put struct{ Created, Read dpsservice.Enrollment }
	runNodeScript(t, nodeDir, env, "service.js", "put", &put)
	for _, e := range []dpsservice.Enrollment{put.Created, put.Read} {
		if e.RegistrationID != id.RegistrationID || e.DeviceID != deviceID || e.ETag == "" || e.Capabilities == nil || !e.Capabilities.IoTEdge ||
			e.Attestation.Type != "tpm" || e.Attestation.TPM == nil || !bytes.Equal(e.Attestation.TPM.EndorsementKey, id.EndorsementKey) {
			t.Errorf("Node service client got enrollment %+v, want %s, device %s, an etag, iotEdge and the TPM's EK", e, id.RegistrationID, deviceID)
		}
	}
	if put.Created.ETag != put.Read.ETag {
		t.Errorf("etag created %q, read %q: want the same", put.Created.ETag, put.Read.ETag)
	}

	// The emulator holds it, as the lab's own client reads it at the endpoint.
	c, err := lab.DPSServiceClient(stateDir)
	if err != nil {
		t.Fatal(err)
	}
	got, err := c.GetEnrollment(t.Context(), id.RegistrationID)
	if err != nil {
		t.Fatal(err)
	}
	if got.ETag != put.Read.ETag || got.DeviceID != deviceID || !bytes.Equal(got.Attestation.TPM.EndorsementKey, id.EndorsementKey) {
		t.Errorf("the emulator holds %+v, want what the Node client put", got)
	}

	// Azure's Node.js device client registers the TPM at the same name.
	var res struct {
		Status      string `json:"status"`
		AssignedHub string `json:"assignedHub"`
		DeviceID    string `json:"deviceId"`
	}
	runNode(t, nodeDir, append(env, "DPS_HOST="+service, "DPS_PORT="+strconv.Itoa(lab.HTTPSPort), "ID_SCOPE="+d.IDScope(), "SIGN_DATA=eA=="), "register", &res)
	if res.Status != "assigned" || res.AssignedHub != lab.Hub || res.DeviceID != deviceID {
		t.Errorf("registration = %+v, want assigned to %s as %s", res, lab.Hub, deviceID)
	}
	if _, ok := d.Registry().Get(lab.Hub, deviceID); !ok {
		t.Errorf("the lab's registry has no %s on %s", deviceID, lab.Hub)
	}

	checkNodeBulkAndQuery(t, nodeDir, env, c, id.RegistrationID)

	runNodeScript(t, nodeDir, env, "service.js", "delete", &struct{}{})
	var se *dpsservice.ServiceError
	if _, err := c.GetEnrollment(t.Context(), id.RegistrationID); !errors.As(err, &se) || se.HTTPStatus != http.StatusNotFound {
		t.Errorf("after the Node client deleted it, GetEnrollment = %v, want 404", err)
	}
}

// skipOrFail skips with the reason, except under CI, where every peer is
// there and the test runs as root: there it fails.
func skipOrFail(t *testing.T, format string, args ...any) {
	t.Helper()
	if os.Getenv("CI") != "" {
		t.Fatalf(format, args...)
	}
	t.Skipf(format+" (run as root, or run 'edge-deploy lab hosts --write' as root and allow port 443 with sysctl net.ipv4.ip_unprivileged_port_start=443)", args...)
}

// writeLabHosts puts the lab's lines for names into /etc/hosts, as 'lab
// hosts --write' does, and restores the file at the end when it changed
// it.
func writeLabHosts(t *testing.T, names []string) {
	t.Helper()
	orig, err := os.ReadFile(lab.HostsFile)
	if err != nil {
		t.Fatal(err)
	}
	block, err := lab.HostsLines(names)
	if err != nil {
		t.Fatal(err)
	}
	changed, err := lab.UpdateHosts(lab.HostsFile, block)
	if err != nil {
		skipOrFail(t, "cannot write the lab's names into %s: %v", lab.HostsFile, err)
	}
	if !changed {
		return
	}
	written, err := os.ReadFile(lab.HostsFile)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(lab.HostsFile)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		now, err := os.ReadFile(lab.HostsFile)
		if err != nil || !bytes.Equal(now, written) {
			t.Errorf("%s changed while the test ran (%v); left as it is, with the lab's lines", lab.HostsFile, err)
			return
		}
		if err := atomicfile.WriteFile(lab.HostsFile, orig, fi.Mode().Perm()); err != nil {
			t.Errorf("restore %s: %v", lab.HostsFile, err)
		}
	})
}

// checkResolves checks that name resolves to addr alone through glibc
// (getent hosts), Go's pure Go and cgo resolvers, and Node.js's
// dns.lookup.
func checkResolves(t *testing.T, name, addr string) {
	t.Helper()
	got := map[string][]string{}
	out, err := exec.CommandContext(t.Context(), "getent", "ahostsv4", name).Output()
	if err != nil {
		t.Errorf("getent ahostsv4 %s: %v", name, err)
	}
	for _, l := range strings.Split(string(out), "\n") {
		if f := strings.Fields(l); len(f) > 0 && !slices.Contains(got["glibc"], f[0]) {
			got["glibc"] = append(got["glibc"], f[0])
		}
	}
	r := &net.Resolver{PreferGo: true}
	got["go"], err = r.LookupHost(t.Context(), name)
	if err != nil {
		t.Errorf("Go resolver: %v", err)
	}
	got["cgo"] = lookupCgo(t, name)
	out, err = exec.CommandContext(t.Context(), "node", "-e",
		`require('dns').lookup(process.argv[1], {all: true}, (err, a) => { if (err) throw err; console.log(a.map((x) => x.address).join(' ')); })`, name).Output()
	if err != nil {
		t.Errorf("node dns.lookup(%s): %v", name, err)
	}
	got["node"] = strings.Fields(string(out))
	for _, resolver := range []string{"glibc", "go", "cgo", "node"} {
		if !slices.Equal(got[resolver], []string{addr}) {
			t.Errorf("%s resolves %s to %q, want [%s]", resolver, name, got[resolver], addr)
		}
	}
}

// lookupCgo resolves name in a copy of this test binary made to use the
// cgo resolver (getaddrinfo), which it reports.
func lookupCgo(t *testing.T, name string) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), nodeTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestLookupHelper$")
	cmd.Env = append(os.Environ(), "EDGE_LOOKUP_NAME="+name, "GODEBUG=netdns=cgo+2")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Errorf("cgo lookup of %s: %v\n%s%s", name, err, stdout.Bytes(), stderr.Bytes())
		return nil
	}
	if !strings.Contains(stderr.String(), fmt.Sprintf("hostLookupOrder(%s) = cgo", name)) {
		t.Errorf("the cgo lookup of %s did not use the cgo resolver:\n%s", name, stderr.Bytes())
	}
	addrs, _, _ := strings.Cut(stdout.String(), "\n")
	return strings.Fields(addrs)
}

// TestLookupHelper is lookupCgo's child: it prints the addresses of
// $EDGE_LOOKUP_NAME.
func TestLookupHelper(t *testing.T) {
	name := os.Getenv("EDGE_LOOKUP_NAME")
	if name == "" {
		t.Skip("run by lookupCgo")
	}
	addrs, err := net.LookupHost(name)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Println(strings.Join(addrs, " "))
	os.Exit(0)
}

// checkNodeBulkAndQuery drives Azure's Node.js service client through its
// own bulk operation (create, create again, update, updateIfMatchEtag,
// delete) and its paged
// query, checking each result in the emulator with the lab's own client c.
// other is an enrollment that exists throughout.
func checkNodeBulkAndQuery(t *testing.T, nodeDir string, env []string, c *dpsservice.Client, other string) {
	t.Helper()
	const prefix, count, pageSize = "node-bulk", 5, 2
	env = append(env, "BULK_PREFIX="+prefix, "BULK_COUNT="+strconv.Itoa(count), "PAGE_SIZE="+strconv.Itoa(pageSize))
	ids := make([]string, count)
	for i := range ids {
		ids[i] = fmt.Sprintf("%s-%d", prefix, i)
	}

	var created struct{ Created, Again dpsservice.BulkResult }
	runNodeScript(t, nodeDir, env, "service.js", "bulk-create", &created)
	if !created.Created.IsSuccessful || len(created.Created.Errors) != 0 {
		t.Errorf("bulk create = %+v, want successful", created.Created)
	}
	if a := created.Again; a.IsSuccessful || len(a.Errors) != 1 || a.Errors[0].RegistrationID != ids[0] || a.Errors[0].ErrorCode/1000 != 409 {
		t.Errorf("bulk create of an existing enrollment = %+v, want one 409xxx error for %s", a, ids[0])
	}
	for _, id := range ids {
		if e, err := c.GetEnrollment(t.Context(), id); err != nil || e.Attestation.TPM == nil || e.ProvisioningStatus != dpsservice.StatusEnabled {
			t.Errorf("after bulk create, GetEnrollment(%s) = %+v, %v; want it enabled", id, e, err)
		}
	}

	var updated struct{ Updated dpsservice.BulkResult }
	runNodeScript(t, nodeDir, env, "service.js", "bulk-update", &updated)
	if !updated.Updated.IsSuccessful {
		t.Errorf("bulk update = %+v, want successful", updated.Updated)
	}
	for i, id := range ids {
		e, err := c.GetEnrollment(t.Context(), id)
		if want := fmt.Sprintf("%s-device-%d", prefix, i); err != nil || e.DeviceID != want || e.ProvisioningStatus != dpsservice.StatusDisabled {
			t.Errorf("after bulk update, GetEnrollment(%s) = %+v, %v; want device %s, disabled", id, e, err, want)
		}
	}

	var q struct {
		Pages         [][]string
		Continuations []*string
	}
	runNodeScript(t, nodeDir, env, "service.js", "query", &q)
	want := append(slices.Clone(ids), other)
	var got []string
	for i, page := range q.Pages {
		last := i == len(q.Pages)-1
		if len(page) > pageSize || !last && len(page) != pageSize {
			t.Errorf("query page %d holds %d enrollments, want %d", i, len(page), pageSize)
		}
		if c := q.Continuations[i]; last != (c == nil) || c != nil && *c == "" {
			t.Errorf("query page %d of %d: continuation %v, want one on every page but the last", i+1, len(q.Pages), c)
		}
		got = append(got, page...)
	}
	slices.Sort(got)
	slices.Sort(want)
	if wantPages := (len(want) + pageSize - 1) / pageSize; len(q.Pages) != wantPages || !slices.Equal(got, want) {
		t.Errorf("query read %d pages of %q, want %d pages with %q each once", len(q.Pages), got, wantPages, want)
	}

	var ifMatch struct{ Updated dpsservice.BulkResult }
	runNodeScript(t, nodeDir, env, "service.js", "bulk-update-if-match", &ifMatch)
	if !ifMatch.Updated.IsSuccessful {
		t.Errorf("bulk updateIfMatchEtag = %+v, want successful", ifMatch.Updated)
	}
	for _, id := range ids {
		if e, err := c.GetEnrollment(t.Context(), id); err != nil || e.ProvisioningStatus != dpsservice.StatusEnabled {
			t.Errorf("after bulk updateIfMatchEtag, GetEnrollment(%s) = %+v, %v; want it enabled", id, e, err)
		}
	}

	var deleted struct{ Deleted dpsservice.BulkResult }
	runNodeScript(t, nodeDir, env, "service.js", "bulk-delete", &deleted)
	if !deleted.Deleted.IsSuccessful {
		t.Errorf("bulk delete = %+v, want successful", deleted.Deleted)
	}
	var se *dpsservice.ServiceError
	for _, id := range ids {
		if _, err := c.GetEnrollment(t.Context(), id); !errors.As(err, &se) || se.HTTPStatus != http.StatusNotFound {
			t.Errorf("after bulk delete, GetEnrollment(%s) = %v, want 404", id, err)
		}
	}
	if _, err := c.GetEnrollment(t.Context(), other); err != nil {
		t.Errorf("bulk delete took %s too: %v", other, err)
	}
}
