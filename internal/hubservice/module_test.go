package hubservice_test

import (
	"bytes"
	"errors"
	"net/http"
	"testing"

	"github.com/edgetpm/edgetpm/internal/emulator/hubemu"
	"github.com/edgetpm/edgetpm/internal/hubservice"
	"github.com/edgetpm/edgetpm/internal/sas"
	"github.com/edgetpm/edgetpm/internal/testharness/hubtest"
)

// An edge device manages its own module identities with its own key, as
// aziot-identityd does: create (the hub makes a generation ID and keys),
// a second create refused with 409, read, and keys set with If-Match.
func TestModulesAsDevice(t *testing.T) {
	deviceKey := bytes.Repeat([]byte{3}, 32)
	hub := hubtest.Start(t, hubemu.Config{
		Key:             hubtest.Keys(map[string][]byte{"edge-1": deviceKey}),
		ServicePolicies: map[string][]byte{"iothubowner": bytes.Repeat([]byte{4}, 32)},
	})
	c := &hubservice.Client{
		Device:   &hubservice.Device{HubHostName: hub.HubHostName(), DeviceID: "edge-1", Signer: sas.Key(deviceKey)},
		Endpoint: hub.URL, HTTP: hub.HTTP,
	}
	ctx := t.Context()
	m, err := c.PutModule(ctx, hubservice.Module{DeviceID: "edge-1", ModuleID: "relay"}, "")
	if err != nil {
		t.Fatal(err)
	}
	if m.GenerationID == "" || m.ETag == "" || m.Authentication == nil || m.Authentication.SymmetricKey == nil || len(m.Authentication.SymmetricKey.PrimaryKey) == 0 {
		t.Fatalf("PutModule = %+v, want a generation ID, an ETag and keys", m)
	}
	_, err = c.PutModule(ctx, hubservice.Module{DeviceID: "edge-1", ModuleID: "relay"}, "")
	var se *hubservice.ServiceError
	if !errors.As(err, &se) || se.HTTPStatus != http.StatusConflict || se.Code != "ModuleAlreadyExistsOnDevice" {
		t.Errorf("a second create = %v, want 409 ModuleAlreadyExistsOnDevice", err)
	}
	got, err := c.GetModule(ctx, "edge-1", "relay")
	if err != nil || got.GenerationID != m.GenerationID {
		t.Fatalf("GetModule = %+v, %v; want generation %s", got, err, m.GenerationID)
	}
	keys := &hubservice.SymmetricKey{PrimaryKey: bytes.Repeat([]byte{1}, 32), SecondaryKey: bytes.Repeat([]byte{2}, 32)}
	up, err := c.PutModule(ctx, hubservice.Module{DeviceID: "edge-1", ModuleID: "relay",
		Authentication: &hubservice.Authentication{Type: "sas", SymmetricKey: keys}}, "*")
	if err != nil {
		t.Fatal(err)
	}
	if up.GenerationID != m.GenerationID || !bytes.Equal(up.Authentication.SymmetricKey.PrimaryKey, keys.PrimaryKey) {
		t.Errorf("PutModule with keys = %+v", up)
	}
	// The hub now takes the module's tokens signed with its key.
	hub.Connect(t, "edge-1", "relay", keys.PrimaryKey, nil)
	// Another device's key is refused.
	other := &hubservice.Client{
		Device:   &hubservice.Device{HubHostName: hub.HubHostName(), DeviceID: "edge-1", Signer: sas.Key(bytes.Repeat([]byte{9}, 32))},
		Endpoint: hub.URL, HTTP: hub.HTTP,
	}
	if _, err := other.GetModule(ctx, "edge-1", "relay"); !errors.As(err, &se) || se.HTTPStatus != http.StatusUnauthorized {
		t.Errorf("GetModule with a wrong device key = %v, want 401", err)
	}
}

// An operator lists and deletes module identities with a service policy;
// a deleted module is not found again.
func TestListDeleteModules(t *testing.T) {
	ownerKey := bytes.Repeat([]byte{4}, 32)
	hub := hubtest.Start(t, hubemu.Config{
		Key:             hubtest.Keys(map[string][]byte{"edge-1": bytes.Repeat([]byte{3}, 32)}),
		ServicePolicies: map[string][]byte{"iothubowner": ownerKey},
		Devices:         func() []string { return []string{"edge-1"} },
	})
	c := &hubservice.Client{Conn: hub.Policy("iothubowner", ownerKey), Endpoint: hub.URL, HTTP: hub.HTTP}
	ctx := t.Context()
	if _, err := c.PutModule(ctx, hubservice.Module{DeviceID: "edge-1", ModuleID: "filter"}, ""); err != nil {
		t.Fatal(err)
	}
	list, err := c.ListModules(ctx, "edge-1")
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, m := range list {
		ids = append(ids, m.ModuleID)
	}
	if len(ids) != 3 || ids[0] != "$edgeAgent" || ids[1] != "$edgeHub" || ids[2] != "filter" {
		t.Errorf("ListModules = %v, want $edgeAgent, $edgeHub and filter", ids)
	}
	if err := c.DeleteModule(ctx, "edge-1", "filter", "*"); err != nil {
		t.Fatal(err)
	}
	var se *hubservice.ServiceError
	if err := c.DeleteModule(ctx, "edge-1", "filter", "*"); !errors.As(err, &se) || se.HTTPStatus != http.StatusNotFound || se.Code != "ModuleNotFound" {
		t.Errorf("a second delete = %v, want 404 ModuleNotFound", err)
	}
	if _, err := c.GetModule(ctx, "edge-1", "filter"); !errors.As(err, &se) || se.HTTPStatus != http.StatusNotFound {
		t.Errorf("GetModule after delete = %v, want 404", err)
	}
}
