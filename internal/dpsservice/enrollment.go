// Package dpsservice is the DPS service API (docs/dps-protocol.md#service-api) as far as TPM
// individual enrollments go: the JSON types the DPS emulator serves and the
// tools send, the service connection string, the error body, and a client.
package dpsservice

import (
	"encoding/json"
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
