package hubservice

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
)

// ModuleAPIVersion is the api-version of the module identity calls, the
// one aziot-identityd sends to IoT Hub's module registry
// (aziot-cloud-client-async src/hub/mod.rs).
const ModuleAPIVersion = "2017-11-08-preview"

// Module is a module identity in IoT Hub's registry.
type Module struct {
	ModuleID  string `json:"moduleId"`
	DeviceID  string `json:"deviceId"`
	ManagedBy string `json:"managedBy,omitempty"`
	// GenerationID and ETag are set by IoT Hub: a module created anew has
	// another generation.
	GenerationID string `json:"generationId,omitempty"`
	ETag         string `json:"etag,omitempty"`
	// Authentication nil in a create has IoT Hub generate both keys.
	Authentication *Authentication `json:"authentication,omitempty"`
}

// Authentication is how a module authenticates; only "sas" with
// symmetric keys is modelled.
type Authentication struct {
	Type         string        `json:"type"`
	SymmetricKey *SymmetricKey `json:"symmetricKey,omitempty"`
}

// SymmetricKey is a pair of keys, base64 in JSON.
type SymmetricKey struct {
	PrimaryKey   []byte `json:"primaryKey"`
	SecondaryKey []byte `json:"secondaryKey"`
}

// PutModule creates a module identity (ifMatch "": IoT Hub answers 409
// ModuleAlreadyExistsOnDevice when it exists) or updates one (ifMatch its
// ETag or "*": 404 ModuleNotFound when it does not), and returns it as
// stored.
func (c *Client) PutModule(ctx context.Context, m Module, ifMatch string) (*Module, error) {
	var out Module
	if err := c.doVersion(ctx, ModuleAPIVersion, http.MethodPut, modulePath(m.DeviceID, m.ModuleID), ifMatch, m, &out); err != nil {
		return nil, fmt.Errorf("put module identity %s: %w", Identity(m.DeviceID, m.ModuleID), err)
	}
	return &out, nil
}

// GetModule returns a module identity.
func (c *Client) GetModule(ctx context.Context, deviceID, moduleID string) (*Module, error) {
	var out Module
	if err := c.doVersion(ctx, ModuleAPIVersion, http.MethodGet, modulePath(deviceID, moduleID), "", nil, &out); err != nil {
		return nil, fmt.Errorf("get module identity %s: %w", Identity(deviceID, moduleID), err)
	}
	return &out, nil
}

// ListModules returns the module identities of a device; IoT Hub lists
// an IoT Edge device's $edgeAgent and $edgeHub with the others.
func (c *Client) ListModules(ctx context.Context, deviceID string) ([]Module, error) {
	var out []Module
	if err := c.doVersion(ctx, ModuleAPIVersion, http.MethodGet, "/devices/"+url.PathEscape(deviceID)+"/modules", "", nil, &out); err != nil {
		return nil, fmt.Errorf("list the module identities of %s: %w", deviceID, err)
	}
	return out, nil
}

// DeleteModule deletes a module identity (ifMatch "" or "*": whatever its
// ETag; 404 ModuleNotFound when it does not exist).
func (c *Client) DeleteModule(ctx context.Context, deviceID, moduleID, ifMatch string) error {
	if err := c.doVersion(ctx, ModuleAPIVersion, http.MethodDelete, modulePath(deviceID, moduleID), ifMatch, nil, nil); err != nil {
		return fmt.Errorf("delete module identity %s: %w", Identity(deviceID, moduleID), err)
	}
	return nil
}

func modulePath(deviceID, moduleID string) string {
	return "/devices/" + url.PathEscape(deviceID) + "/modules/" + url.PathEscape(moduleID)
}
