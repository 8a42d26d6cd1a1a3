// Package registry is the device registry the local DPS and IoT Hub
// emulators share: DPS creates a hub device when it assigns a registration,
// and the hub verifies that device's SAS tokens with the same primary key
// (docs/dps-protocol.md#after-assignment). It is kept in memory and, optionally, in a JSON file.
package registry

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/edgetpm/edgetpm/internal/atomicfile"
)

// Device statuses.
const (
	StatusEnabled  = "enabled"
	StatusDisabled = "disabled"
)

// ErrNotFound reports a device that is not in the registry.
var ErrNotFound = errors.New("device not found")

// Device is an IoT Hub device identity with a symmetric key.
type Device struct {
	// Hub is the IoT Hub host name; lookups ignore its case.
	Hub      string `json:"hub"`
	DeviceID string `json:"deviceId"`
	// RegistrationID is the DPS registration that created the device, if
	// any.
	RegistrationID string `json:"registrationId,omitempty"`
	// PrimaryKey is the device's symmetric key; DPS wraps it for the TPM
	// (the second activation blob).
	PrimaryKey []byte `json:"primaryKey"`
	// Status is StatusEnabled or StatusDisabled; empty means enabled.
	Status  string    `json:"status"`
	Created time.Time `json:"created"`
}

func (d Device) clone() Device {
	d.PrimaryKey = slices.Clone(d.PrimaryKey)
	return d
}

func (d *Device) validate() error {
	if d.Hub == "" || strings.ContainsAny(d.Hub, "/ ") {
		return fmt.Errorf("device %q: hub host name %q is not a host name", d.DeviceID, d.Hub)
	}
	if err := ValidateDeviceID(d.DeviceID); err != nil {
		return err
	}
	// IoT Hub symmetric keys are 16 to 64 bytes.
	if n := len(d.PrimaryKey); n < 16 || n > 64 {
		return fmt.Errorf("device %q: primary key of %d bytes, want 16 to 64", d.DeviceID, n)
	}
	switch d.Status {
	case "":
		d.Status = StatusEnabled
	case StatusEnabled, StatusDisabled:
	default:
		return fmt.Errorf("device %q: status %q, want %q or %q", d.DeviceID, d.Status, StatusEnabled, StatusDisabled)
	}
	return nil
}

// ValidateDeviceID checks a device ID: 1 to 128 characters (IoT Hub
// identity registry limits), without '/' or spaces, which would make SAS
// resources and topics ambiguous.
func ValidateDeviceID(id string) error {
	if id == "" || len(id) > 128 || strings.ContainsAny(id, "/ \t\r\n") {
		return fmt.Errorf("device ID %q is not valid: want 1 to 128 characters without '/' or spaces", id)
	}
	return nil
}

// key identifies a device: host names are case-insensitive, device IDs are
// not.
func key(hub, deviceID string) string { return strings.ToLower(hub) + "/" + deviceID }

// Registry holds devices. It is safe for concurrent use.
type Registry struct {
	path string

	mu      sync.Mutex
	devices map[string]Device
}

// file is the on-disk form.
type file struct {
	Devices []Device `json:"devices"`
}

// New returns a registry kept in path, loading the devices already there.
// With path "" it lives in memory only.
func New(path string) (*Registry, error) {
	r := &Registry{path: path, devices: map[string]Device{}}
	if path == "" {
		return r, nil
	}
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return r, nil
	}
	if err != nil {
		return nil, fmt.Errorf("load device registry: %w", err)
	}
	var f file
	if err := json.Unmarshal(data, &f); err != nil {
		return nil, fmt.Errorf("load device registry %s: %w", path, err)
	}
	for _, d := range f.Devices {
		if err := d.validate(); err != nil {
			return nil, fmt.Errorf("load device registry %s: %w", path, err)
		}
		r.devices[key(d.Hub, d.DeviceID)] = d
	}
	return r, nil
}

// Get returns the device deviceID of hub.
func (r *Registry) Get(hub, deviceID string) (Device, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	d, ok := r.devices[key(hub, deviceID)]
	return d.clone(), ok
}

// Put adds d or replaces the device with its hub and ID.
func (r *Registry) Put(d Device) error {
	d = d.clone()
	if err := d.validate(); err != nil {
		return err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.change(func(m map[string]Device) { m[key(d.Hub, d.DeviceID)] = d })
}

// Ensure adds d unless a device with its hub and ID exists, and returns the
// device now registered. It is how DPS creates a hub device without
// replacing the key of one that exists.
func (r *Registry) Ensure(d Device) (Device, error) {
	d = d.clone()
	if err := d.validate(); err != nil {
		return Device{}, err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if old, ok := r.devices[key(d.Hub, d.DeviceID)]; ok {
		return old.clone(), nil
	}
	if err := r.change(func(m map[string]Device) { m[key(d.Hub, d.DeviceID)] = d }); err != nil {
		return Device{}, err
	}
	return d.clone(), nil
}

// Delete removes the device deviceID of hub, or returns ErrNotFound.
func (r *Registry) Delete(hub, deviceID string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	k := key(hub, deviceID)
	if _, ok := r.devices[k]; !ok {
		return fmt.Errorf("delete %s on %s: %w", deviceID, hub, ErrNotFound)
	}
	return r.change(func(m map[string]Device) { delete(m, k) })
}

// List returns every device, ordered by hub and device ID.
func (r *Registry) List() []Device {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.sorted()
}

func (r *Registry) sorted() []Device {
	keys := make([]string, 0, len(r.devices))
	for k := range r.devices {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	out := make([]Device, 0, len(keys))
	for _, k := range keys {
		out = append(out, r.devices[k].clone())
	}
	return out
}

// change applies f to a copy of the devices, saves the copy and only then
// makes it current, so a failed write changes nothing. r.mu is held.
func (r *Registry) change(f func(map[string]Device)) error {
	next := make(map[string]Device, len(r.devices)+1)
	for k, d := range r.devices {
		next[k] = d
	}
	f(next)
	old := r.devices
	r.devices = next
	if r.path == "" {
		return nil
	}
	data, err := json.MarshalIndent(file{Devices: r.sorted()}, "", "  ")
	if err == nil {
		err = atomicfile.WriteFile(r.path, append(data, '\n'), 0o600)
	}
	if err != nil {
		r.devices = old
		return fmt.Errorf("save device registry: %w", err)
	}
	return nil
}
