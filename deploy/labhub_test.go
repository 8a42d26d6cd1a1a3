package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edgetpm/edgetpm/deploy/lab"
	"github.com/edgetpm/edgetpm/internal/backoff"
	"github.com/edgetpm/edgetpm/internal/emulator/registry"
	"github.com/edgetpm/edgetpm/internal/sas"
	"github.com/edgetpm/edgetpm/module/edgehub"
	"github.com/edgetpm/edgetpm/module/workload"
)

// startCommand runs an edge-deploy command until the test ends and
// returns the first line it prints.
func startCommand(t *testing.T, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var stdout, stderr syncBuffer
	done := make(chan error, 1)
	go func() { done <- run(ctx, args, &stdout, &stderr) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("edge-deploy %s: %v\n%s", strings.Join(args[:2], " "), err, stderr.String())
		}
	})
	deadline := time.Now().Add(20 * time.Second)
	for !strings.Contains(stdout.String(), "\n") {
		if time.Now().After(deadline) {
			t.Fatalf("edge-deploy %q printed nothing:\n%s", args, stderr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	return stdout.String()
}

// lab hub and lab workload, separate commands as they are separate
// processes in the lab, agree on a module's key as IoT Edge does: lab
// workload makes the module's identity in the hub's module registry, with
// the device's key from the registry lab dps fills. A module signing
// through the workload API connects to the hub and its telemetry reaches
// the service API.
func TestLabHubAndWorkload(t *testing.T) {
	dir, err := os.MkdirTemp("", "lab")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	reg, err := registry.New(filepath.Join(dir, lab.RegistryFile))
	if err != nil {
		t.Fatal(err)
	}
	if err := reg.Put(registry.Device{Hub: "lab-hub.azure-devices.net", DeviceID: "edge1", PrimaryKey: make([]byte, 32), Status: registry.StatusEnabled, Created: time.Now()}); err != nil {
		t.Fatal(err)
	}

	line := startCommand(t, "lab", "hub", "--listen", "127.0.0.1:0", "--service", "127.0.0.1:0", "--state-dir", dir, "--gateway", "gw.local", "--names=false", "--json")
	var hub struct{ MQTT, Service string }
	if err := json.Unmarshal([]byte(line), &hub); err != nil {
		t.Fatalf("lab hub printed %q: %v", line, err)
	}
	sock := filepath.Join(dir, "wl.sock")
	out := startCommand(t, "lab", "workload", "--socket", sock, "--state-dir", dir, "--device", "edge1")

	// lab workload made the relay's module identity in the hub, as
	// aziot-identityd does, and serves its key; a module it did not make
	// has none.
	var gen string
	if _, err := fmt.Sscanf(out, "module identity edge1/relay, generation %s", &gen); err != nil {
		t.Fatalf("lab workload printed %q: %v", out, err)
	}
	svc, err := lab.ServiceClient(dir)
	if err != nil {
		t.Fatal(err)
	}
	if m, err := svc.GetModule(t.Context(), "edge1", "relay"); err != nil || m.GenerationID != gen {
		t.Errorf("the hub's module identity edge1/relay = %+v, %v; want generation %s", m, err, gen)
	}
	other, err := workload.New("unix://"+sock, "sensor", "1", "")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := other.Sign(t.Context(), []byte("x")); err == nil {
		t.Error("the workload API signs for a module it made no identity for")
	}

	wl, err := workload.New("unix://"+sock, "relay", "1", "")
	if err != nil {
		t.Fatal(err)
	}
	bundle, err := wl.TrustBundle(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(bundle)
	s, err := edgehub.New(edgehub.Config{
		Identity: edgehub.Identity{HubHostName: "lab-hub.azure-devices.net", DeviceID: "edge1", ModuleID: "relay", Host: "gw.local", Address: hub.MQTT},
		Signer:   wl,
		RootCAs:  pool,
		Backoff:  backoff.Backoff{Base: 50 * time.Millisecond, Max: time.Second},
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	defer func() { cancel(); <-done }()
	pctx, pcancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer pcancel()
	if err := s.Publish(pctx, "out", &edgehub.Message{ID: "lab-1", Body: []byte(`{"v":1}`)}); err != nil {
		t.Fatal(err)
	}
	httpc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, hub.Service+"/messages/upstream?api-version=2021-04-12", nil)
	if resp, err := httpc.Do(req); err != nil || resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("the service API without a token: %v %v", resp, err)
	}
	// The lab writes its iothubowner connection string, 0600, for edge-deploy.
	owner, err := sas.ParsePolicy(string(readFile(t, filepath.Join(dir, lab.HubConnFile), 0o600)))
	if err != nil {
		t.Fatal(err)
	}
	tok, err := owner.Token(t.Context(), time.Now().Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", tok)
	resp, err := httpc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var msgs []map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&msgs); err != nil || resp.StatusCode != 200 {
		t.Fatalf("GET /messages/upstream: %d %v", resp.StatusCode, err)
	}
	if got := fmt.Sprint(msgs); len(msgs) != 1 || !strings.Contains(got, "lab-1") {
		t.Errorf("upstream = %s", got)
	}
}
