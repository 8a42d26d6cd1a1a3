// Package assignment keeps what DPS assigned to this device, so that the
// provisioner's token and status commands and the relay module's device
// mode can reach the IoT hub without registering again. The file holds no
// key (the key stays in the TPM), but it names the device's identity, so it
// is written 0600.
package assignment

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/edgetpm/edgetpm/internal/atomicfile"
	"github.com/edgetpm/edgetpm/internal/sas"
)

// DefaultPath is where edge-provisioner keeps the assignment.
const DefaultPath = "/var/lib/edge-provisioner/assignment.json"

// Assignment is the outcome of the last successful DPS registration.
type Assignment struct {
	IDScope        string    `json:"idScope"`
	Endpoint       string    `json:"endpoint"`
	RegistrationID string    `json:"registrationId"`
	AssignedHub    string    `json:"assignedHub"`
	DeviceID       string    `json:"deviceId"`
	Substatus      string    `json:"substatus,omitempty"`
	AssignedAt     time.Time `json:"assignedAt"`
	// TPM is the URI of the TPM holding the hub key, and AuthKeyHandle the
	// persistent handle it is at.
	TPM           string `json:"tpm"`
	AuthKeyHandle uint32 `json:"authKeyHandle"`
}

// Validate checks that a holds what a hub connection needs.
func (a *Assignment) Validate() error {
	switch {
	case a.AssignedHub == "":
		return errors.New("no assignedHub")
	case a.DeviceID == "":
		return errors.New("no deviceId")
	case a.RegistrationID == "":
		return errors.New("no registrationId")
	case !sas.ValidHostName(a.AssignedHub):
		return fmt.Errorf("assignedHub %q is not a host name", a.AssignedHub)
	case !sas.ValidID(a.DeviceID):
		return fmt.Errorf("deviceId %q is not an IoT Hub device ID", a.DeviceID)
	case a.TPM == "":
		return errors.New("no tpm")
	case a.AuthKeyHandle < 0x81000000 || a.AuthKeyHandle > 0x817FFFFF:
		return fmt.Errorf("authKeyHandle %#x is not an owner persistent handle", a.AuthKeyHandle)
	}
	return nil
}

// Parse decodes and validates an assignment file's content.
func Parse(data []byte) (*Assignment, error) {
	var a Assignment
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&a); err != nil {
		return nil, err
	}
	if dec.More() {
		return nil, errors.New("trailing data after the JSON object")
	}
	if err := a.Validate(); err != nil {
		return nil, err
	}
	return &a, nil
}

// Load reads the assignment at path. A missing file gives an error that
// matches os.ErrNotExist and says to register first.
func Load(path string) (*Assignment, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("no DPS assignment at %s (run edge-provisioner register first): %w", path, err)
	}
	if err != nil {
		return nil, err
	}
	a, err := Parse(data)
	if err != nil {
		return nil, fmt.Errorf("read DPS assignment %s: %w", path, err)
	}
	return a, nil
}

// Save writes a to path atomically, mode 0600, making its folder (0700)
// when missing.
func Save(path string, a *Assignment) error {
	if err := a.Validate(); err != nil {
		return fmt.Errorf("save DPS assignment: %w", err)
	}
	data, err := json.MarshalIndent(a, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	return atomicfile.WriteFile(path, append(data, '\n'), 0o600)
}
