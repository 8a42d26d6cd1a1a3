package main

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edgetpm/edgetpm/deploy/lab"
	"github.com/edgetpm/edgetpm/internal/cli"
	"github.com/edgetpm/edgetpm/internal/emulator/hubemu"
	"github.com/edgetpm/edgetpm/internal/emulator/registry"
	"github.com/edgetpm/edgetpm/internal/sas"
	"github.com/edgetpm/edgetpm/internal/testharness/hubtest"
	"github.com/edgetpm/edgetpm/module/edgehub"
	"github.com/edgetpm/edgetpm/module/twin"
)

// lab twin set changes a module's desired properties through the lab hub's
// service API, and waits for the module (edge-relay's session and twin
// reconciler, connected to the hub) to report them applied or rejected.
func TestLabTwinSet(t *testing.T) {
	moduleKey := []byte("relay-module-key-0123456789abcdef")
	hub := hubtest.Start(t, hubemu.Config{
		Key:             hubtest.Keys(map[string][]byte{"edge1/relay": moduleKey}),
		ServicePolicies: map[string][]byte{"iothubowner": ownerKey},
	})
	dir := labStateOf(t, hub)
	reg, err := registry.New(filepath.Join(dir, lab.RegistryFile))
	if err != nil {
		t.Fatal(err)
	}
	if err := reg.Put(registry.Device{Hub: hub.HubHostName(), DeviceID: "edge1", PrimaryKey: make([]byte, 32), Created: time.Now()}); err != nil {
		t.Fatal(err)
	}

	// The module: the relay's session and twin reconciler.
	var sess *edgehub.Session
	rec := &twin.Reconciler{
		Get:       func(ctx context.Context) ([]byte, error) { return sess.GetTwin(ctx) },
		Report:    func(ctx context.Context, p []byte) error { return sess.ReportProperties(ctx, p) },
		Apply:     func(context.Context, twin.Config) error { return nil },
		StatePath: filepath.Join(t.TempDir(), "desired.json"),
	}
	if _, err := rec.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	sess, err = edgehub.New(edgehub.Config{
		Identity:  edgehub.Identity{HubHostName: hub.HubHostName(), DeviceID: "edge1", ModuleID: "relay", Host: hub.GatewayHostName(), Address: hub.Addr},
		Signer:    sas.Key(moduleKey),
		RootCAs:   hub.Pool,
		Desired:   func(ctx context.Context, p []byte) { rec.Patch(ctx, p) },
		Connected: func(ctx context.Context) { rec.Sync(ctx) },
	})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { sess.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()

	out, err := cmd(t, "lab", "twin", "set", "--state-dir", dir, "--hub", hub.HubHostName(), "logLevel=debug", "batching.enabled=true", "inFlight=64")
	if err != nil || !strings.Contains(out, "edge1/relay applied version") {
		t.Fatalf("lab twin set: %v\n%s", err, out)
	}
	tw, err := hub.Twin("edge1", "relay")
	if err != nil || !strings.Contains(string(tw.Desired), `"inFlight":64`) || !strings.Contains(string(tw.Desired), `"batching":{"enabled":true}`) {
		t.Errorf("desired = %s, %v", tw.Desired, err)
	}
	out, err = cmd(t, "lab", "twin", "set", "--state-dir", dir, "--hub", hub.HubHostName(), "inFlight=0")
	if err == nil || !strings.Contains(err.Error(), "rejected version") || !strings.Contains(err.Error(), "inFlight") {
		t.Errorf("an invalid value: %v\n%s", err, out)
	}
	if _, err := cmd(t, "lab", "twin", "set", "--state-dir", dir, "--hub", hub.HubHostName(), "novalue"); err == nil || !cli.IsUsage(err) {
		t.Errorf("KEY without =VALUE: %v", err)
	}
}
