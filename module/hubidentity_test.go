package main

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edgetpm/edgetpm/internal/cli"
	"github.com/edgetpm/edgetpm/internal/emulator/hubemu"
	"github.com/edgetpm/edgetpm/internal/emulator/registry"
	"github.com/edgetpm/edgetpm/internal/testharness/hubtest"
	"github.com/edgetpm/edgetpm/internal/testharness/tpmtest"
	"github.com/edgetpm/edgetpm/internal/testharness/until"
	"github.com/edgetpm/edgetpm/provisioner/tpm"
)

// Device mode with the hub identity 'edge-provisioner identity set' put in
// the TPM: no assignment file, host and device from the TPM's NV, every
// token signed there. The hub first refuses (the portal's key was
// regenerated: CONNACK 5); once its registry holds the TPM's key again,
// the relay signs a fresh token and connects, renews it as it expires, and
// never shows the key.
func TestDeviceModeHubIdentity(t *testing.T) {
	sw := tpmtest.StartSwtpm(t)
	key := make([]byte, 32)
	rand.Read(key)
	tp, err := tpm.Open(sw.URI, tpm.Config{})
	if err != nil {
		t.Fatal(err)
	}
	// As edge-provisioner identity set does: EK and SRK first.
	if _, err = tp.Identity(t.Context()); err == nil {
		err = tp.SetHubIdentity(t.Context(), tpm.HubIdentity{HostName: hubemu.DefaultHubHostName, DeviceID: "press-7"}, key, false)
	}
	tp.Close()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	regPath := filepath.Join(dir, "registry.json")
	reg, err := registry.New(regPath)
	if err != nil {
		t.Fatal(err)
	}
	device := func(k []byte) {
		t.Helper()
		if err := reg.Put(registry.Device{Hub: hubemu.DefaultHubHostName, DeviceID: "press-7", PrimaryKey: k, Status: registry.StatusEnabled, Created: time.Now()}); err != nil {
			t.Fatal(err)
		}
	}
	regenerated := make([]byte, 32)
	rand.Read(regenerated)
	device(regenerated)
	hub := hubtest.Start(t, hubemu.Config{Key: registry.Lookup(regPath, hubemu.DefaultHubHostName)})
	caFile := filepath.Join(dir, "ca.pem")
	writeFile(t, caFile, hub.CA.CertPEM())

	log := &syncBuffer{}
	environ := map[string]string{"EDGE_RELAY_HUB_ADDRESS": hub.Addr, "EDGE_RELAY_TPM": sw.URI}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"--metrics-addr", "127.0.0.1:0", "--data", filepath.Join(dir, "data"), "--ca-file", caFile, "--token-ttl", "3s"},
			nil, log, func(k string) string { return environ[k] })
	}()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("edge-relay: %v", err)
		}
		out := log.String()
		b64 := base64.StdEncoding.EncodeToString(key)
		if strings.Contains(out, string(key)) || strings.Contains(out, strings.TrimRight(b64, "=")) || strings.Contains(strings.ToLower(out), hex.EncodeToString(key)) {
			t.Errorf("the relay's log shows the key:\n%s", out)
		}
		if !strings.Contains(out, `"device":"press-7"`) && !strings.Contains(out, "press-7") {
			t.Errorf("the relay's log does not name the device from the TPM:\n%s", out)
		}
	}()

	until.Within(t, 30*time.Second, "the hub to refuse the TPM's token", func() bool {
		// paho retries a refused MQTT 3.1.1 CONNECT as MQTT 3.1, which the
		// hub refuses in turn: the error logged is that second refusal.
		return strings.Contains(log.String(), "edgehub connection")
	})
	device(key)
	ping := func(what string) {
		t.Helper()
		until.Within(t, 30*time.Second, what, func() bool {
			status, _, err := hub.InvokeMethod(t.Context(), "press-7", "", "ping", json.RawMessage(`{}`), 5*time.Second)
			return err == nil && status == 200
		})
	}
	ping("the device to connect with a fresh token and answer ping")
	until.Within(t, 30*time.Second, "a token renewal", func() bool { return strings.Contains(log.String(), "renewing token") })
	ping("the device to answer ping after renewing its token")
}

// --tpm without a hub identity in the TPM says how to put one there; with
// --device-state too it is a usage error.
func TestDeviceModeHubIdentityMissing(t *testing.T) {
	sw := tpmtest.StartSwtpm(t)
	dir := t.TempDir()
	err := run(t.Context(), []string{"--metrics-addr", "127.0.0.1:0", "--data", filepath.Join(dir, "data"), "--tpm", sw.URI}, nil, &syncBuffer{}, func(string) string { return "" })
	if err == nil || !strings.Contains(err.Error(), "identity set") {
		t.Errorf("edge-relay --tpm on a TPM without a hub identity = %v, want one naming 'identity set'", err)
	}
	err = run(t.Context(), []string{"--data", filepath.Join(dir, "data"), "--tpm", sw.URI, "--device-state", filepath.Join(dir, "a.json")}, nil, &syncBuffer{}, func(string) string { return "" })
	if cli.ExitCode(err) != 2 || !strings.Contains(err.Error(), "device_state") {
		t.Errorf("edge-relay --tpm --device-state = %v, want a usage error", err)
	}
}

// A connection string in the environment does not silently win over
// --tpm: the two name different identities, so together they are a usage
// error, as --tpm with --device-state is.
func TestDeviceModeTPMWithConnectionString(t *testing.T) {
	dir := t.TempDir()
	for _, name := range []string{"EdgeHubConnectionString", "IotHubConnectionString"} {
		environ := map[string]string{name: "HostName=" + hubemu.DefaultHubHostName + ";DeviceId=dev;SharedAccessKey=" + base64.StdEncoding.EncodeToString(make([]byte, 32))}
		// Bounded: before the fix the relay ran in development mode.
		ctx, cancel := context.WithTimeout(t.Context(), 3*time.Second)
		err := run(ctx, []string{"--metrics-addr", "127.0.0.1:0", "--data", filepath.Join(dir, "data"), "--tpm", "mssim://127.0.0.1:1"}, nil, &syncBuffer{}, func(k string) string { return environ[k] })
		cancel()
		if cli.ExitCode(err) != 2 || !strings.Contains(fmt.Sprint(err), name) || !strings.Contains(fmt.Sprint(err), "--tpm") {
			t.Errorf("edge-relay --tpm with $%s = %v (exit %d), want a usage error naming both", name, err, cli.ExitCode(err))
		}
	}
}

// After 'identity set' replaces the TPM's hub identity with another
// device, the running relay's next connect is refused (CONNACK 5: it
// signs the old device's audience with the new key). It then reads the
// TPM's identity again and, seeing another device, exits with an error
// (exit 1, which the unit's Restart=on-failure restarts); started again,
// as systemd does, it connects as the new device.
func TestDeviceModeHubIdentityReplaced(t *testing.T) {
	// The reference simulator, served to several connections as
	// /dev/tpmrm0 is: swtpm takes one, which the running relay holds.
	uri := tpmtest.StartSim(t)
	dir := t.TempDir()
	regPath := filepath.Join(dir, "registry.json")
	reg, err := registry.New(regPath)
	if err != nil {
		t.Fatal(err)
	}
	var keys [][]byte
	setIdentity := func(device string) {
		t.Helper()
		key := make([]byte, 32)
		rand.Read(key)
		keys = append(keys, key)
		if err := reg.Put(registry.Device{Hub: hubemu.DefaultHubHostName, DeviceID: device, PrimaryKey: key, Status: registry.StatusEnabled, Created: time.Now()}); err != nil {
			t.Fatal(err)
		}
		tp, err := tpm.Open(uri, tpm.Config{})
		if err != nil {
			t.Fatal(err)
		}
		if _, err = tp.Identity(t.Context()); err == nil {
			err = tp.SetHubIdentity(t.Context(), tpm.HubIdentity{HostName: hubemu.DefaultHubHostName, DeviceID: device}, key, false)
		}
		tp.Close()
		if err != nil {
			t.Fatal(err)
		}
	}
	setIdentity("press-7")
	hub := hubtest.Start(t, hubemu.Config{Key: registry.Lookup(regPath, hubemu.DefaultHubHostName)})
	caFile := filepath.Join(dir, "ca.pem")
	writeFile(t, caFile, hub.CA.CertPEM())
	environ := map[string]string{"EDGE_RELAY_HUB_ADDRESS": hub.Addr, "EDGE_RELAY_TPM": uri}
	start := func(log *syncBuffer) (context.CancelFunc, chan error) {
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() {
			done <- run(ctx, []string{"--metrics-addr", "127.0.0.1:0", "--data", filepath.Join(dir, "data"), "--ca-file", caFile, "--token-ttl", "3s"},
				nil, log, func(k string) string { return environ[k] })
		}()
		return cancel, done
	}
	ping := func(device, what string) {
		t.Helper()
		until.Within(t, 30*time.Second, what, func() bool {
			status, _, err := hub.InvokeMethod(t.Context(), device, "", "ping", json.RawMessage(`{}`), 5*time.Second)
			return err == nil && status == 200
		})
	}
	log := &syncBuffer{}
	cancel, done := start(log)
	defer cancel()
	ping("press-7", "the relay to connect as press-7")

	setIdentity("press-8")
	select {
	case err := <-done:
		if cli.ExitCode(err) != 1 || !strings.Contains(fmt.Sprint(err), "press-8") || !strings.Contains(fmt.Sprint(err), "press-7") {
			t.Errorf("edge-relay after the hub identity changed = %v (exit %d), want exit 1 naming both devices", err, cli.ExitCode(err))
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("edge-relay kept running as press-7 after the TPM's identity became press-8:\n%s", log.String())
	}
	cancel()

	log2 := &syncBuffer{}
	cancel2, done2 := start(log2)
	ping("press-8", "the restarted relay to connect as press-8")
	cancel2()
	if err := <-done2; err != nil {
		t.Errorf("restarted edge-relay: %v", err)
	}
	out := log.String() + log2.String()
	for _, key := range keys {
		b64 := base64.StdEncoding.EncodeToString(key)
		if strings.Contains(out, strings.TrimRight(b64, "=")) || strings.Contains(strings.ToLower(out), hex.EncodeToString(key)) {
			t.Errorf("the relay's log shows a key:\n%s", out)
		}
	}
}
