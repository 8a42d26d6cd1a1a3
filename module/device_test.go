package main

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
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

// Device mode: the hub key is in the TPM, where DPS put it; edge-relay
// signs its tokens there and talks to IoT Hub as the device.
func TestDeviceMode(t *testing.T) {
	sw := tpmtest.StartSwtpm(t)
	key := make([]byte, 32)
	rand.Read(key)
	tp, err := tpm.Open(sw.URI, tpm.Config{})
	if err != nil {
		t.Fatal(err)
	}
	id, err := tp.Identity(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	blob, err := activation.Build(rand.Reader, id.EndorsementKey, id.StorageRootKey, key, nil)
	if err == nil {
		err = tp.ImportKey(t.Context(), blob)
	}
	tp.Close()
	if err != nil {
		t.Fatal(err)
	}

	hub := hubtest.Start(t, hubemu.Config{Key: hubtest.Keys(map[string][]byte{"press-7": key})})
	dir := t.TempDir()
	state := filepath.Join(dir, "assignment.json")
	if err := assignment.Save(state, &assignment.Assignment{
		IDScope: "0ne00000001", Endpoint: "https://global.azure-devices-provisioning.net", RegistrationID: id.RegistrationID,
		AssignedHub: hub.HubHostName(), DeviceID: "press-7", Substatus: "initialAssignment", AssignedAt: time.Now().UTC(),
		TPM: sw.URI, AuthKeyHandle: uint32(tpm.DefaultAuthKeyHandle),
	}); err != nil {
		t.Fatal(err)
	}
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
	until.True(t, "the device to connect", func() bool { return hub.Connected("press-7", "") })
	status, resp, err := hub.InvokeMethod(t.Context(), "press-7", "", "ping", json.RawMessage(`{}`), 5*time.Second)
	if err != nil || status != 200 {
		t.Errorf("ping the device = %d %s %v", status, resp, err)
	}
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
