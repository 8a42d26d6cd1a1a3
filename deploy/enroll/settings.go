package enroll

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/edgetpm/edgetpm/internal/dpsservice"
)

// Reprovision policies, as the Azure portal names them, and what each sets
// in ReprovisionPolicy (updateHubAssignment, migrateDeviceData).
const (
	// ReprovisionMigrate moves the device and its twin to the hub its
	// enrollment now names: DPS's default.
	ReprovisionMigrate = "migrate"
	// ReprovisionReset moves the device and resets its twin to the
	// enrollment's initial twin.
	ReprovisionReset = "reset"
	// ReprovisionNever keeps the device on the hub it was first given.
	ReprovisionNever = "never"
)

// TagKey is the initial twin tag Enroll owns: {"ekVerified": bool} and,
// for a verified EK, "ekAnchor" ("manufacturer" for a bundled root,
// "operator" for an --ek-ca one) and "manufacturer", "model" and
// "firmware" from its certificate. A fleet query like "tags.tpm.ekVerified = false" finds the
// devices enrolled with --allow-unverified.
const TagKey = "tpm"

// Settings are the enrollment settings of every device, which a file's
// columns override one device at a time. A setting left empty is not
// asked for: a new enrollment takes the default named below, and an
// update leaves what DPS holds as it is, so that a re-run of a factory
// file does not undo later changes (a device disabled since). The zero
// value creates enabled IoT Edge devices with DPS's allocation and
// re-provisioning defaults.
type Settings struct {
	// DeviceID is the IoT hub device ID; empty means the registration ID.
	// It fits one identity only.
	DeviceID string
	// IoTEdge says whether the devices are IoT Edge devices; nil means
	// true on create.
	IoTEdge *bool
	// IoTHubs are the linked hubs the devices may be assigned to; empty
	// means all of DPS's.
	IoTHubs []string
	// AllocationPolicy is hashed, static (one hub) or geoLatency; empty
	// means DPS's default, hashed, on create, and on update the policy DPS
	// holds, unless it is static and IoTHubs names more hubs than one:
	// then hashed.
	AllocationPolicy string
	// ProvisioningStatus is enabled or disabled; empty means DPS's
	// default, enabled, on create.
	ProvisioningStatus string
	// Reprovision is ReprovisionMigrate, ReprovisionReset or
	// ReprovisionNever; empty means DPS's default, migrate, on create.
	Reprovision string
	// Tags and Desired are the initial twin's tags and desired properties.
	Tags    map[string]json.RawMessage
	Desired map[string]json.RawMessage
}

// Validate checks the settings as they would apply to a device.
func (s *Settings) Validate() error {
	switch s.AllocationPolicy {
	case "", dpsservice.AllocationHashed, dpsservice.AllocationGeoLatency:
	case dpsservice.AllocationStatic:
		if len(s.IoTHubs) != 1 {
			return errors.New("static allocation takes exactly one IoT hub")
		}
	default:
		return fmt.Errorf("allocation policy %q, want hashed, static or geoLatency", clip(s.AllocationPolicy))
	}
	for _, h := range s.IoTHubs {
		if h == "" || len(h) > 253 || strings.ContainsAny(h, "/:@ \t\r\n?#%") {
			return fmt.Errorf("IoT hub %q is not a host name", clip(h))
		}
	}
	switch s.ProvisioningStatus {
	case "", dpsservice.StatusEnabled, dpsservice.StatusDisabled:
	default:
		return fmt.Errorf("provisioning status %q, want enabled or disabled", clip(s.ProvisioningStatus))
	}
	switch s.Reprovision {
	case "", ReprovisionMigrate, ReprovisionReset, ReprovisionNever:
	default:
		return fmt.Errorf("reprovision policy %q, want migrate, reset or never", clip(s.Reprovision))
	}
	if s.DeviceID != "" && !validDeviceID(s.DeviceID) {
		return fmt.Errorf("device ID %q is not valid", clip(s.DeviceID))
	}
	if _, ok := s.Tags[TagKey]; ok {
		return fmt.Errorf("tag %q is enroll's own: it records the EK check", TagKey)
	}
	return nil
}

// over returns s with the settings rec gives.
func (s Settings) over(rec *Record) (Settings, error) {
	if rec.DeviceID != "" {
		s.DeviceID = rec.DeviceID
	}
	if rec.IoTEdge != nil {
		s.IoTEdge = rec.IoTEdge
	}
	if len(rec.IoTHubs) > 0 {
		s.IoTHubs = rec.IoTHubs
		if rec.AllocationPolicy == "" && s.AllocationPolicy == dpsservice.AllocationStatic && len(rec.IoTHubs) > 1 {
			s.AllocationPolicy = ""
		}
	}
	if rec.AllocationPolicy != "" {
		s.AllocationPolicy = rec.AllocationPolicy
	}
	if rec.ProvisioningStatus != "" {
		s.ProvisioningStatus = rec.ProvisioningStatus
	}
	if rec.Reprovision != "" {
		s.Reprovision = rec.Reprovision
	}
	s.Tags = mergeRaw(rec.Tags, s.Tags)
	s.Desired = mergeRaw(rec.Desired, s.Desired)
	return s, s.Validate()
}

// enrollment is the enrollment s asks for, for the EK ek and what its
// check found.
func (s Settings) enrollment(regID string, ek []byte, check *Check) dpsservice.Enrollment {
	e := dpsservice.Enrollment{
		RegistrationID:     regID,
		DeviceID:           s.DeviceID,
		Attestation:        dpsservice.Attestation{Type: "tpm", TPM: &dpsservice.TPMAttestation{EndorsementKey: ek}},
		IoTHubs:            slices.Clone(s.IoTHubs),
		AllocationPolicy:   s.AllocationPolicy,
		ProvisioningStatus: s.ProvisioningStatus,
	}
	if s.IoTEdge != nil {
		e.Capabilities = &dpsservice.Capabilities{IoTEdge: *s.IoTEdge}
	}
	if s.Reprovision != "" {
		e.ReprovisionPolicy = reprovisionPolicy(s.Reprovision)
	}
	tags := mergeRaw(nil, s.Tags)
	if tags == nil {
		tags = map[string]json.RawMessage{}
	}
	tags[TagKey] = check.tag()
	twin := map[string]any{"tags": tags}
	if len(s.Desired) > 0 {
		twin["properties"] = map[string]any{"desired": s.Desired}
	}
	e.InitialTwin, _ = json.Marshal(twin) // RawMessages that were decoded, maps of strings
	return e
}

// created returns e as created: the settings not asked for that DPS has
// no default for take enroll's.
func created(e dpsservice.Enrollment) dpsservice.Enrollment {
	if e.Capabilities == nil {
		e.Capabilities = &dpsservice.Capabilities{IoTEdge: true}
	}
	if len(e.IoTHubs) > 0 && e.AllocationPolicy == "" {
		// DPS applies its default policy over the listed hubs; say it.
		e.AllocationPolicy = dpsservice.AllocationHashed
	}
	return e
}

func reprovisionPolicy(p string) *dpsservice.ReprovisionPolicy {
	switch p {
	case ReprovisionReset:
		return &dpsservice.ReprovisionPolicy{UpdateHubAssignment: true, MigrateDeviceData: false}
	case ReprovisionNever:
		return &dpsservice.ReprovisionPolicy{}
	}
	return &dpsservice.ReprovisionPolicy{UpdateHubAssignment: true, MigrateDeviceData: true}
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// validID applies DPS's rule to registration IDs: 1 to 128 letters,
// digits and - . _ : (registration IDs are case-insensitive).
func validID(id string) bool {
	if id == "" || len(id) > 128 {
		return false
	}
	for _, c := range id {
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.ContainsRune("-._:", c)) {
			return false
		}
	}
	return true
}

// validDeviceID applies IoT Hub's rule to device IDs: 1 to 128 ASCII
// letters, digits and - . % _ * ? ! ( ) , : = @ $ '.
func validDeviceID(id string) bool {
	if id == "" || len(id) > 128 {
		return false
	}
	for _, c := range id {
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.ContainsRune("-.%_*?!(),:=@$'", c)) {
			return false
		}
	}
	return true
}
