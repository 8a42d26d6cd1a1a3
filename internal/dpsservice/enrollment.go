// Package dpsservice is the DPS service API (docs/dps-protocol.md#service-api) as far as TPM
// individual enrollments go: the JSON types the DPS emulator serves and the
// tools send, the service connection string, the error body, and a client.
package dpsservice

import (
	"encoding/json"
	"reflect"
	"strings"
	"time"
)

// APIVersion is the service API version the client sends.
const APIVersion = "2021-10-01"

// OwnerKeyName is the shared access policy with full rights on a DPS
// instance.
const OwnerKeyName = "provisioningserviceowner"

// Values of Enrollment.ProvisioningStatus.
const (
	StatusEnabled  = "enabled"
	StatusDisabled = "disabled"
)

// Values of Enrollment.AllocationPolicy.
const (
	AllocationHashed     = "hashed"
	AllocationStatic     = "static"
	AllocationGeoLatency = "geoLatency"
)

// Enrollment is an individual enrollment (IndividualEnrollment in Azure's REST API spec). Fields
// the service owns (ETag, the times, RegistrationState) are ignored on
// writes.
type Enrollment struct {
	RegistrationID         string             `json:"registrationId"`
	DeviceID               string             `json:"deviceId,omitempty"`
	Attestation            Attestation        `json:"attestation"`
	IoTHubHostName         string             `json:"iotHubHostName,omitempty"`
	IoTHubs                []string           `json:"iotHubs,omitempty"`
	AllocationPolicy       string             `json:"allocationPolicy,omitempty"`
	ProvisioningStatus     string             `json:"provisioningStatus,omitempty"`
	Capabilities           *Capabilities      `json:"capabilities,omitempty"`
	InitialTwin            json.RawMessage    `json:"initialTwin,omitempty"`
	ReprovisionPolicy      *ReprovisionPolicy `json:"reprovisionPolicy,omitempty"`
	ETag                   string             `json:"etag,omitempty"`
	CreatedDateTimeUTC     time.Time          `json:"createdDateTimeUtc,omitzero"`
	LastUpdatedDateTimeUTC time.Time          `json:"lastUpdatedDateTimeUtc,omitzero"`
	RegistrationState      *RegistrationState `json:"registrationState,omitempty"`
	// Extra holds the fields of DPS's enrollment this type does not model
	// (customAllocationDefinition, optionalDeviceInformation, …), as read,
	// so that writing back an enrollment read keeps them: DPS replaces
	// the whole enrollment on a write.
	Extra map[string]json.RawMessage `json:"-"`
}

// modelled are the JSON names of Enrollment's fields, lowercased (JSON
// decoding matches names case-insensitively).
var modelled = func() map[string]bool {
	m := map[string]bool{}
	t := reflect.TypeFor[Enrollment]()
	for i := range t.NumField() {
		if name, _, _ := strings.Cut(t.Field(i).Tag.Get("json"), ","); name != "-" {
			m[strings.ToLower(name)] = true
		}
	}
	return m
}()

// enrollmentJSON is Enrollment without its JSON methods.
type enrollmentJSON Enrollment

// UnmarshalJSON decodes an enrollment, keeping the fields it does not
// model in Extra.
func (e *Enrollment) UnmarshalJSON(b []byte) error {
	if err := json.Unmarshal(b, (*enrollmentJSON)(e)); err != nil {
		return err
	}
	var all map[string]json.RawMessage
	if err := json.Unmarshal(b, &all); err != nil {
		return err
	}
	e.Extra = nil
	for k, v := range all {
		if modelled[strings.ToLower(k)] {
			continue
		}
		if e.Extra == nil {
			e.Extra = map[string]json.RawMessage{}
		}
		e.Extra[k] = v
	}
	return nil
}

// MarshalJSON encodes an enrollment with its Extra fields; a modelled
// field is never taken from Extra.
func (e Enrollment) MarshalJSON() ([]byte, error) {
	b, err := json.Marshal(enrollmentJSON(e))
	if err != nil || len(e.Extra) == 0 {
		return b, err
	}
	var all map[string]json.RawMessage
	if err := json.Unmarshal(b, &all); err != nil {
		return nil, err
	}
	for k, v := range e.Extra {
		if !modelled[strings.ToLower(k)] {
			all[k] = v
		}
	}
	return json.Marshal(all)
}

// Attestation is the attestation mechanism; only "tpm" is used here.
type Attestation struct {
	Type string          `json:"type"`
	TPM  *TPMAttestation `json:"tpm,omitempty"`
}

// TPMAttestation carries marshalled TPM2B_PUBLIC areas, size prefix
// included (docs/dps-protocol.md#request-bodies); JSON holds them in standard base64.
type TPMAttestation struct {
	EndorsementKey []byte `json:"endorsementKey"`
	StorageRootKey []byte `json:"storageRootKey,omitempty"`
}

// Capabilities of the device.
type Capabilities struct {
	IoTEdge bool `json:"iotEdge"`
}

// ReprovisionPolicy says what happens when a registered device registers
// again. DPS defaults both to true.
type ReprovisionPolicy struct {
	UpdateHubAssignment bool `json:"updateHubAssignment"`
	MigrateDeviceData   bool `json:"migrateDeviceData"`
}

// RegistrationState is the outcome of a device's last registration
// (DeviceRegistrationState in Azure's REST API spec; the device API's DeviceRegistrationResult adds
// tpm and payload, docs/dps-protocol.md#registering-and-polling).
type RegistrationState struct {
	RegistrationID         string    `json:"registrationId"`
	CreatedDateTimeUTC     time.Time `json:"createdDateTimeUtc,omitzero"`
	AssignedHub            string    `json:"assignedHub,omitempty"`
	DeviceID               string    `json:"deviceId,omitempty"`
	Status                 string    `json:"status"`
	Substatus              string    `json:"substatus,omitempty"`
	ErrorCode              int       `json:"errorCode,omitempty"`
	ErrorMessage           string    `json:"errorMessage,omitempty"`
	LastUpdatedDateTimeUTC time.Time `json:"lastUpdatedDateTimeUtc,omitzero"`
	ETag                   string    `json:"etag,omitempty"`
}
