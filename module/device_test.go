package main

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/edgetpm/edgetpm/internal/activation"
	"github.com/edgetpm/edgetpm/internal/assignment"
	"github.com/edgetpm/edgetpm/internal/emulator/hubemu"
	"github.com/edgetpm/edgetpm/internal/testharness/hubtest"
	"github.com/edgetpm/edgetpm/internal/testharness/tpmtest"
	"github.com/edgetpm/edgetpm/internal/testharness/until"
	"github.com/edgetpm/edgetpm/provisioner/tpm"
)

// tpmDevice is swtpm holding a hub key as DPS leaves it: imported under
// the SRK and persisted at the default auth key handle.
type tpmDevice struct {
	key            []byte
	uri            string
	registrationID string
}

func newTPMDevice(t testing.TB) *tpmDevice {
	t.Helper()
	sw := tpmtest.StartSwtpm(t)
	key := make([]byte, 32)
	rand.Read(key)
	tp, err := tpm.Open(sw.URI, tpm.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer tp.Close()
	id, err := tp.Identity(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	blob, err := activation.Build(rand.Reader, id.EndorsementKey, id.StorageRootKey, key, nil)
	if err == nil {
		err = tp.ImportKey(t.Context(), blob)
	}
	if err != nil {
		t.Fatal(err)
	}
	return &tpmDevice{key: key, uri: sw.URI, registrationID: id.RegistrationID}
}

// assignment saves, in dir, what `edge-provisioner register` would after
// DPS assigned the TPM to hub as device, and returns its path.
func (d *tpmDevice) assignment(t testing.TB, hub *hubtest.Server, device, dir string) string {
	t.Helper()
	state := filepath.Join(dir, "assignment.json")
	if err := assignment.Save(state, &assignment.Assignment{
		IDScope: "0ne00000001", Endpoint: "https://global.azure-devices-provisioning.net", RegistrationID: d.registrationID,
		AssignedHub: hub.HubHostName(), DeviceID: device, Substatus: "initialAssignment", AssignedAt: time.Now().UTC(),
		TPM: d.uri, AuthKeyHandle: uint32(tpm.DefaultAuthKeyHandle),
	}); err != nil {
		t.Fatal(err)
	}
	return state
}

// Device mode: the hub key is in the TPM, where DPS put it; edge-relay
// signs its tokens there and talks to IoT Hub as the device.
func TestDeviceMode(t *testing.T) {
	dev := newTPMDevice(t)
	hub := hubtest.Start(t, hubemu.Config{Key: hubtest.Keys(map[string][]byte{"press-7": dev.key})})
	dir := t.TempDir()
	state := dev.assignment(t, hub, "press-7", dir)
	caFile := filepath.Join(dir, "ca.pem")
	writeFile(t, caFile, hub.CA.CertPEM())
	environ := map[string]string{"EDGE_RELAY_HUB_ADDRESS": hub.Addr}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"--metrics-addr", "127.0.0.1:0", "--data", filepath.Join(dir, "data"), "--device-state", state, "--ca-file", caFile}, nil, &syncBuffer{}, func(k string) string { return environ[k] })
	}()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("edge-relay: %v", err)
		}
	}()
	// Connected comes before the subscriptions are in place: until then
	// IoT Hub answers a method call "not subscribed".
	var last string
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("last answer to ping: %s", last)
		}
	})
	until.True(t, "the device to answer ping", func() bool {
		status, resp, err := hub.InvokeMethod(t.Context(), "press-7", "", "ping", json.RawMessage(`{}`), 5*time.Second)
		last = fmt.Sprintf("%d %s %v", status, resp, err)
		return err == nil && status == 200
	})
}

// Development mode: a module connection string and a CA file.
func TestDevelopmentMode(t *testing.T) {
	hub := hubtest.Start(t, hubemu.Config{Key: hubtest.Keys(map[string][]byte{"edge1/relay": relayKey})})
	dir := t.TempDir()
	caFile := filepath.Join(dir, "ca.pem")
	writeFile(t, caFile, hub.CA.CertPEM())
	environ := map[string]string{
		"EdgeHubConnectionString": "HostName=" + hub.HubHostName() + ";GatewayHostName=" + hub.GatewayHostName() +
			";DeviceId=edge1;ModuleId=relay;SharedAccessKey=" + base64.StdEncoding.EncodeToString(relayKey),
		"EdgeModuleCACertificateFile": caFile,
		"EDGE_RELAY_HUB_ADDRESS":      hub.Addr,
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"--metrics-addr", "127.0.0.1:0", "--data", filepath.Join(dir, "data")}, nil, &syncBuffer{}, func(k string) string { return environ[k] })
	}()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("edge-relay: %v", err)
		}
	}()
	until.True(t, "the module to connect", func() bool { return hub.Connected("edge1", "relay") })
}
