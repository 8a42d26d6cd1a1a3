package dpsemu

import (
	"cmp"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"slices"
	"strings"

	"github.com/edgetpm/edgetpm/internal/activation"
	"github.com/edgetpm/edgetpm/internal/dpsservice"
	"github.com/edgetpm/edgetpm/internal/emulator/registry"
)

// Substatus values (DeviceRegistrationResult in Azure's REST API spec, docs/dps-protocol.md#registering-and-polling).
const (
	substatusInitial  = "initialAssignment"
	substatusMigrated = "deviceDataMigrated"
	substatusReset    = "deviceDataReset"
)

// allocationError is a registration that ends "failed".
type allocationError struct {
	code int
	msg  string
}

// allocate picks the hub for enr among linked. prevHub is where the device
// was assigned last time, "" if never.
func allocate(enr *dpsservice.Enrollment, linked []Hub, defaultPolicy, prevHub string) (string, *allocationError) {
	find := func(host string) (Hub, bool) {
		i := slices.IndexFunc(linked, func(h Hub) bool { return strings.EqualFold(h.HostName, host) })
		if i < 0 {
			return Hub{}, false
		}
		return linked[i], true
	}
	candidates := linked
	if len(enr.IoTHubs) > 0 {
		candidates = nil
		for _, host := range enr.IoTHubs {
			h, ok := find(host)
			if !ok {
				return "", &allocationError{codeHubNotLinked, fmt.Sprintf("IoT hub %s is not linked to this provisioning service.", host)}
			}
			candidates = append(candidates, h)
		}
	}
	// With updateHubAssignment false a registered device stays on its hub
	// (ReprovisionPolicy in Azure's REST API spec).
	if prevHub != "" && enr.ReprovisionPolicy != nil && !enr.ReprovisionPolicy.UpdateHubAssignment {
		if h, ok := find(prevHub); ok && slices.Contains(candidates, h) {
			return h.HostName, nil
		}
	}
	candidates = slices.SortedFunc(slices.Values(candidates), func(a, b Hub) int {
		return cmp.Compare(strings.ToLower(a.HostName), strings.ToLower(b.HostName))
	})
	policy := cmp.Or(enr.AllocationPolicy, defaultPolicy)
	switch policy {
	case dpsservice.AllocationStatic:
		host := enr.IoTHubHostName
		if host == "" && len(candidates) == 1 {
			return candidates[0].HostName, nil
		}
		h, ok := find(host)
		if host == "" || !ok || !slices.Contains(candidates, h) {
			return "", &allocationError{codeHubNotLinked, fmt.Sprintf("Static allocation to IoT hub %q, which is not linked to this provisioning service.", host)}
		}
		return h.HostName, nil
	case dpsservice.AllocationHashed:
		// A stable hash of the registration ID: the same device lands on
		// the same hub every time.
		sum := sha256.Sum256([]byte(strings.ToLower(enr.RegistrationID)))
		return candidates[binary.BigEndian.Uint64(sum[:8])%uint64(len(candidates))].HostName, nil
	case dpsservice.AllocationGeoLatency:
		best := candidates[0]
		for _, h := range candidates[1:] {
			if h.Latency < best.Latency {
				best = h
			}
		}
		return best.HostName, nil
	}
	return "", &allocationError{codeAllocation, fmt.Sprintf("Allocation policy %q is not supported.", policy)}
}

// assign finishes an operation: it allocates a hub, makes sure the device
// exists there and wraps the device's key for the TPM (blob #2,
// docs/dps-protocol.md#after-assignment). An error is an internal failure; refusals end in a "failed" or
// "disabled" result. s.mu is held.
func (s *Server) assign(enr *dpsservice.Enrollment, op *operation) (*registrationResult, error) {
	now := s.now()
	var prev dpsservice.RegistrationState
	if enr.RegistrationState != nil {
		prev = *enr.RegistrationState
	}
	rs := dpsservice.RegistrationState{
		RegistrationID:         enr.RegistrationID,
		CreatedDateTimeUTC:     cmp.Or(prev.CreatedDateTimeUTC, now),
		LastUpdatedDateTimeUTC: now,
		ETag:                   s.registrationETag(),
	}
	res := &registrationResult{Payload: op.Payload}
	switch hub, aerr := allocate(enr, s.hubs, s.allocation, prev.AssignedHub); {
	case enr.ProvisioningStatus == dpsservice.StatusDisabled:
		// Still challenged, then disabled at the end, like C's
		// PROV_DEVICE_RESULT_DISABLED (docs/dps-protocol.md#registering-and-polling).
		rs.Status, rs.ErrorCode, rs.ErrorMessage = statusDisabled, codeDisabled, "The enrollment is disabled."
	case aerr != nil:
		rs.Status, rs.ErrorCode, rs.ErrorMessage = statusFailed, aerr.code, aerr.msg
	default:
		deviceID := cmp.Or(enr.DeviceID, enr.RegistrationID)
		key, err := s.random(32)
		if err != nil {
			return nil, err
		}
		dev, err := s.reg.Ensure(registry.Device{
			Hub: hub, DeviceID: deviceID, RegistrationID: enr.RegistrationID,
			PrimaryKey: key, Status: registry.StatusEnabled, Created: now,
		})
		if err != nil {
			return nil, fmt.Errorf("create device %s on %s: %w", deviceID, hub, err)
		}
		blob, err := activation.Build(s.rand, enr.Attestation.TPM.EndorsementKey, op.StorageRootKey, dev.PrimaryKey, nil)
		if err != nil {
			return nil, fmt.Errorf("wrap the key of device %s: %w", deviceID, err)
		}
		rs.Status, rs.AssignedHub, rs.DeviceID = statusAssigned, hub, deviceID
		rs.Substatus = substatusInitial
		if prev.AssignedHub != "" && !strings.EqualFold(prev.AssignedHub, hub) {
			rs.Substatus = substatusMigrated
			if enr.ReprovisionPolicy != nil && !enr.ReprovisionPolicy.MigrateDeviceData {
				rs.Substatus = substatusReset
			}
		}
		res.TPM = &tpmResult{AuthenticationKey: blob}
	}
	res.RegistrationState = rs
	// The enrollment's registrationState is the last outcome; a failed
	// attempt keeps the hub of the last assignment for the next one.
	if rs.Status != statusAssigned && prev.AssignedHub != "" {
		rs.AssignedHub, rs.DeviceID = prev.AssignedHub, prev.DeviceID
	}
	enr.RegistrationState = &rs
	return res, nil
}
