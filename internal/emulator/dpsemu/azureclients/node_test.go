package azureclients

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/edgetpm/edgetpm/internal/dpsservice"
	"github.com/edgetpm/edgetpm/internal/emulator/dpsemu"
	"github.com/edgetpm/edgetpm/internal/testharness/dpstest"
	"github.com/edgetpm/edgetpm/internal/testharness/tpmtest"
	"github.com/edgetpm/edgetpm/provisioner/tpm"
)

// Bounds on each subprocess; npm ci downloads 44 packages with a cold cache.
const (
	npmTimeout  = 2 * time.Minute
	nodeTimeout = time.Minute
)

// Azure's Node.js SDK, unmodified (azure-iot-provisioning-device with the
// HTTP transport and azure-iot-security-tpm over tss.js), registers a
// reference TPM simulator with the emulator: it reads the EK, gets the 401
// challenge, activates blob #1, signs the SAS token in the TPM, polls the
// operation and imports blob #2 at 0x81000100 (docs/dps-protocol.md#the-flow). The key it
// imported must then be the hub device key the registry holds, both as the
// SDK signs with it and as our own TPM client does.
func TestNodeSDKRegistersWithTPM(t *testing.T) {
	if testing.Short() {
		t.Skip("installs the Azure Node.js SDK with npm")
	}
	nodeDir := installNodeClient(t)

	tpmURI := tpmtest.StartSim(t)
	_, tpmPort, _ := net.SplitHostPort(strings.TrimPrefix(tpmURI, "mssim://"))

	const (
		idScope  = "0ne00000A1B"
		hub      = "node-hub.azure-devices.net"
		deviceID = "node-tpm-device"
	)
	// Operations stay "assigning" for assignDelay on the emulator's clock,
	// which the recorder moves past it once the SDK has polled one 202: so
	// the SDK always sees an assigning poll, however slow the machine. The
	// clock stays near real time, since the SDK's SAS expiry is real time.
	const assignDelay = 10 * time.Minute
	var skew atomic.Int64
	var rec *recorder
	emu := dpstest.Start(t, dpsemu.Config{
		IDScope:         idScope,
		ServiceHostName: "node-dps.azure-devices-provisioning.net",
		Hubs:            []dpsemu.Hub{{HostName: hub}},
		RetryAfter:      1,
		AssignDelay:     assignDelay,
		Now:             func() time.Time { return time.Now().Add(time.Duration(skew.Load())) },
		Log:             zerolog.New(zerolog.NewTestWriter(t)),
	}, func(next http.Handler) http.Handler {
		rec = &recorder{t: t, next: next, afterAssigningPoll: func() { skew.Store(int64(assignDelay)) }}
		return rec
	})
	dpsURL, err := url.Parse(emu.URL)
	if err != nil {
		t.Fatal(err)
	}
	caFile := emu.CAFile(t)
	signData := []byte("node sdk key check\n" + strconv.FormatInt(time.Now().Unix(), 10))
	env := []string{
		"TPM_HOST=127.0.0.1",
		"TPM_PORT=" + tpmPort,
		"DPS_HOST=127.0.0.1",
		"DPS_PORT=" + dpsURL.Port(),
		"ID_SCOPE=" + emu.IDScope(),
		"SIGN_DATA=" + base64.StdEncoding.EncodeToString(signData),
		"NODE_EXTRA_CA_CERTS=" + caFile,
		// Trace the SDK's state machines and requests; shown on failure.
		"DEBUG=azure-iot-provisioning-device*,azure-iot-security-tpm*",
	}

	// Step 1: the identity an operator would enroll, as the SDK reads it.
	var id struct {
		RegistrationID string `json:"registrationId"`
		EndorsementKey []byte `json:"endorsementKey"`
		StorageRootKey []byte `json:"storageRootKey"`
	}
	runNode(t, nodeDir, env, "identity", &id)
	if want := tpm.RegistrationID(id.EndorsementKey); id.RegistrationID != want {
		t.Fatalf("Node registration ID = %q, want %q (docs/dps-protocol.md#registration-id, over its EK)", id.RegistrationID, want)
	}

	emu.EnrollTPM(t, id.RegistrationID, id.EndorsementKey, func(e *dpsservice.Enrollment) { e.DeviceID = deviceID })

	// Step 2: the SDK's registration, then a signature with the imported key.
	var res struct {
		Status             string `json:"status"`
		OperationID        string `json:"operationId"`
		RegistrationID     string `json:"registrationId"`
		AssignedHub        string `json:"assignedHub"`
		DeviceID           string `json:"deviceId"`
		RegistrationStatus string `json:"registrationStatus"`
		Signature          []byte `json:"signature"`
	}
	runNode(t, nodeDir, env, "register", &res)
	if res.Status != "assigned" || res.RegistrationStatus != "assigned" {
		t.Fatalf("status = %q, registrationState.status = %q, want assigned", res.Status, res.RegistrationStatus)
	}
	if res.RegistrationID != id.RegistrationID || res.AssignedHub != hub || res.DeviceID != deviceID {
		t.Errorf("registrationState = {registrationId %q, assignedHub %q, deviceId %q}, want {%q, %q, %q}",
			res.RegistrationID, res.AssignedHub, res.DeviceID, id.RegistrationID, hub, deviceID)
	}
	if res.OperationID == "" {
		t.Error("result has no operationId")
	}
	checkDeviceFlow(t, rec.device(), "/"+emu.IDScope()+"/registrations/"+id.RegistrationID)
	dev, ok := emu.Registry().Get(res.AssignedHub, res.DeviceID)
	if !ok {
		t.Fatalf("registry has no device %q on %q", res.DeviceID, res.AssignedHub)
	}
	if dev.RegistrationID != id.RegistrationID {
		t.Errorf("registry device registration ID = %q, want %q", dev.RegistrationID, id.RegistrationID)
	}
	mac := hmac.New(sha256.New, dev.PrimaryKey)
	mac.Write(signData)
	want := mac.Sum(nil)
	if !hmac.Equal(res.Signature, want) {
		t.Errorf("Node signWithIdentity = %x, want HMAC-SHA256(registry primary key) = %x", res.Signature, want)
	}

	// Our own client reads the same persisted key at 0x81000100.
	tp, err := tpm.Open(tpmURI, tpm.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer tp.Close()
	got, err := tp.Sign(t.Context(), signData)
	if err != nil {
		t.Fatal(err)
	}
	if !hmac.Equal(got, want) {
		t.Errorf("provisioner/tpm Sign = %x, want HMAC-SHA256(registry primary key) = %x", got, want)
	}
}

// The device API exchanges of docs/dps-protocol.md#the-flow with Node's api-version
// (docs/dps-protocol.md#endpoints-and-headers): an anonymous PUT challenged with 401, the same PUT with the SAS
// token accepted with 202, then polls with the token, "assigning" (202) and
// finally "assigned" (200).
func checkDeviceFlow(t *testing.T, got []exchange, registration string) {
	t.Helper()
	register := registration + "/register"
	ok := len(got) >= 4
	for i, e := range got {
		if !ok {
			break
		}
		switch {
		case e.query.Get("api-version") != "2019-03-31":
			ok = false
		case i == 0:
			ok = e.method == http.MethodPut && e.path == register && !e.auth && e.status == http.StatusUnauthorized
		case i == 1:
			ok = e.method == http.MethodPut && e.path == register && e.auth && e.status == http.StatusAccepted
		default:
			want := http.StatusAccepted
			if i == len(got)-1 {
				want = http.StatusOK
			}
			ok = e.method == http.MethodGet && strings.HasPrefix(e.path, registration+"/operations/") && e.auth && e.status == want
		}
	}
	if !ok {
		var b strings.Builder
		for _, e := range got {
			fmt.Fprintf(&b, "\n  %s", e)
		}
		t.Errorf("device API exchanges:%s\nwant PUT 401 anonymous, PUT 202, GET 202 (one or more), GET 200, all with api-version=2019-03-31", b.String())
	}
}

// exchange is one request to the emulator and the status it got.
type exchange struct {
	method, path string
	query        url.Values
	auth         bool // an Authorization header was sent
	status       int
}

func (e exchange) String() string {
	auth := "anonymous"
	if e.auth {
		auth = "with SAS"
	}
	return fmt.Sprintf("%s %s?%s %s -> %d", e.method, e.path, e.query.Encode(), auth, e.status)
}

// recorder notes the device API exchanges in front of the emulator, and
// calls afterAssigningPoll once an operation poll has been answered 202.
type recorder struct {
	t                  *testing.T
	next               http.Handler
	afterAssigningPoll func()

	mu        sync.Mutex
	exchanges []exchange
}

func (rc *recorder) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	sw := &statusWriter{ResponseWriter: w, status: http.StatusOK}
	rc.next.ServeHTTP(sw, r)
	e := exchange{method: r.Method, path: r.URL.Path, query: r.URL.Query(), auth: r.Header.Get("Authorization") != "", status: sw.status}
	if strings.HasPrefix(r.URL.Path, "/enrollments/") {
		return // the service API
	}
	rc.t.Logf("device API: %s (User-Agent %q, Content-Type %q)", e, r.Header.Get("User-Agent"), r.Header.Get("Content-Type"))
	rc.mu.Lock()
	rc.exchanges = append(rc.exchanges, e)
	rc.mu.Unlock()
	if r.Method == http.MethodGet && sw.status == http.StatusAccepted {
		rc.afterAssigningPoll()
	}
}

func (rc *recorder) device() []exchange {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return slices.Clone(rc.exchanges)
}

type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	w.status = code
	w.ResponseWriter.WriteHeader(code)
}

// Unwrap lets http.ResponseController reach the connection.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// installNodeClient copies testdata/node to a temporary folder and installs
// the locked packages there. Install scripts are skipped: the only native
// module, ffi-napi (tss.js's Windows TBS device, loaded lazily in
// tss.js/lib/TpmDevice.js), does not build against current Node headers and
// is not used with the TCP simulator device.
func installNodeClient(t *testing.T) string {
	t.Helper()
	npm, err := exec.LookPath("npm")
	if err == nil {
		_, err = exec.LookPath("node")
	}
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("node and npm are required under CI: %v", err)
		}
		t.Skipf("node or npm not installed: %v", err)
	}
	dir := t.TempDir()
	if err := os.CopyFS(dir, os.DirFS(filepath.Join("testdata", "node"))); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), npmTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, npm, "ci", "--no-audit", "--no-fund", "--ignore-scripts")
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("npm ci: %v\n%s", err, out)
	}
	if _, err := fs.Stat(os.DirFS(dir), "node_modules/azure-iot-security-tpm/package.json"); err != nil {
		t.Fatalf("npm ci installed no azure-iot-security-tpm: %v", err)
	}
	return dir
}

// runNode runs one step of testdata/node/dps.js and decodes the JSON line it
// prints into out.
func runNode(t *testing.T, dir string, env []string, step string, out any) {
	t.Helper()
	runNodeScript(t, dir, env, "dps.js", step, out)
}

// runNodeScript runs one step of a script of testdata/node and decodes the
// JSON line it prints into out.
func runNodeScript(t *testing.T, dir string, env []string, script, step string, out any) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), nodeTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "node", script, step)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	err := cmd.Run()
	t.Logf("node %s %s took %v", script, step, time.Since(start).Round(time.Millisecond))
	if err != nil {
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			err = fmt.Errorf("%w (timeout %v)", err, nodeTimeout)
		}
		t.Fatalf("node %s %s: %v\nstdout:\n%s\nstderr:\n%s", script, step, err, stdout.Bytes(), stderr.Bytes())
	}
	if err := json.Unmarshal(stdout.Bytes(), out); err != nil {
		t.Fatalf("node %s %s printed %q: %v\nstderr:\n%s", script, step, stdout.Bytes(), err, stderr.Bytes())
	}
}
