package dpsemu

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"

	"github.com/edgetpm/edgetpm/internal/activation"
	"github.com/edgetpm/edgetpm/internal/dpsservice"
	"github.com/edgetpm/edgetpm/internal/emulator/registry"
	"github.com/edgetpm/edgetpm/internal/sas"
)

// serviceRequest runs the checks every service API request shares
// (docs/dps-protocol.md#service-api): pending faults, the api-version,
// the token and the method. It reports whether the request may go on.
func (s *Server) serviceRequest(w http.ResponseWriter, r *http.Request, methods ...string) bool {
	if s.injectFault(w, r, &s.serviceFaults) {
		return false
	}
	if r.URL.Query().Get("api-version") == "" {
		s.writeError(w, http.StatusBadRequest, codeBadRequest, "The api-version query parameter is required.")
		return false
	}
	if err := s.authorizeService(r.Header.Get("Authorization")); err != nil {
		s.log.Warn().Err(err).Msg("service request rejected: bad token")
		s.writeError(w, http.StatusUnauthorized, codeUnauthorized, msgUnauthorized+": "+err.Error())
		return false
	}
	if !slices.Contains(methods, r.Method) {
		w.Header().Set("Allow", strings.Join(methods, ", "))
		s.writeError(w, http.StatusMethodNotAllowed, codeMethod, fmt.Sprintf("Method %s is not allowed here.", r.Method))
		return false
	}
	return true
}

// enrollment serves /enrollments/{id} (docs/dps-protocol.md#service-api).
func (s *Server) enrollment(w http.ResponseWriter, r *http.Request) {
	if !s.serviceRequest(w, r, http.MethodGet, http.MethodPut, http.MethodDelete) {
		return
	}
	id := r.PathValue("id")
	if msg := validRegistrationID(id); msg != "" {
		s.writeError(w, http.StatusBadRequest, codeBadRequest, msg)
		return
	}
	if !s.admit(w, 1) {
		return
	}
	switch r.Method {
	case http.MethodPut:
		s.putEnrollment(w, r, id)
	case http.MethodGet:
		s.getEnrollment(w, id)
	case http.MethodDelete:
		s.deleteEnrollment(w, r, id)
	}
}

// authorizeService checks a service token: the owner policy, sr = the
// service host name, signed with its key (docs/dps-protocol.md#service-api).
func (s *Server) authorizeService(header string) error {
	if header == "" {
		return errors.New("no Authorization header")
	}
	tok, err := sas.Parse(header)
	if err != nil {
		return err
	}
	if tok.KeyName != dpsservice.OwnerKeyName {
		return fmt.Errorf("SAS key name %q, want %q", clip(tok.KeyName), dpsservice.OwnerKeyName)
	}
	if err := tok.MatchAudience(s.serviceHost); err != nil {
		return err
	}
	s.mu.Lock()
	key := s.st.ServiceKey
	s.mu.Unlock()
	return tok.Verify(key, s.now())
}

func (s *Server) putEnrollment(w http.ResponseWriter, r *http.Request, id string) {
	var e dpsservice.Enrollment
	if err := readBody(r, &e); err != nil {
		s.writeError(w, http.StatusBadRequest, codeBadRequest, err.Error())
		return
	}
	if e.RegistrationID == "" {
		e.RegistrationID = id
	}
	if code, msg := validateEnrollment(&e, id, s.hubs); code != 0 {
		s.writeError(w, http.StatusBadRequest, code, msg)
		return
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	k := regKey(id)
	old := s.st.Enrollments[k]
	if m := r.Header.Get("If-Match"); m != "" && !etagMatches(m, old) {
		s.writeError(w, http.StatusPreconditionFailed, codePrecondition, msgETag)
		return
	}
	s.storeEnrollment(&e, old)
	if err := s.save(); err != nil {
		s.internalError(w, err)
		return
	}
	s.log.Info().Str("registration_id", e.RegistrationID).Str("status", e.ProvisioningStatus).Msg("enrollment saved")
	s.writeJSON(w, http.StatusOK, &e, "")
}

func (s *Server) getEnrollment(w http.ResponseWriter, id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.st.Enrollments[regKey(id)]
	if e == nil {
		s.writeError(w, http.StatusNotFound, codeNoEnrollment, msgEnrollmentAbsent)
		return
	}
	s.writeJSON(w, http.StatusOK, e, "")
}

func (s *Server) deleteEnrollment(w http.ResponseWriter, r *http.Request, id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	k := regKey(id)
	old := s.st.Enrollments[k]
	if old == nil {
		s.writeError(w, http.StatusNotFound, codeNoEnrollment, msgEnrollmentAbsent)
		return
	}
	if m := r.Header.Get("If-Match"); m != "" && !etagMatches(m, old) {
		s.writeError(w, http.StatusPreconditionFailed, codePrecondition, msgETag)
		return
	}
	s.removeEnrollment(k)
	if err := s.save(); err != nil {
		s.internalError(w, err)
		return
	}
	s.log.Info().Str("registration_id", old.RegistrationID).Msg("enrollment deleted")
	w.Header()[headerRequestID] = []string{s.uuid()}
	w.WriteHeader(http.StatusNoContent)
}

// storeEnrollment saves e, validated, in place of old (nil when new),
// with fresh service-owned fields. The caller holds s.mu.
func (s *Server) storeEnrollment(e, old *dpsservice.Enrollment) {
	k := regKey(e.RegistrationID)
	now := s.now()
	e.ETag, e.CreatedDateTimeUTC, e.LastUpdatedDateTimeUTC, e.RegistrationState = s.enrollmentETag(), now, now, nil
	if old != nil {
		e.CreatedDateTimeUTC, e.RegistrationState = old.CreatedDateTimeUTC, old.RegistrationState
		// A new EK voids a pending challenge made for the old one.
		if !sameKey(old.Attestation.TPM.EndorsementKey, e.Attestation.TPM.EndorsementKey) {
			delete(s.st.Challenges, k)
		}
	}
	s.st.Enrollments[k] = e
}

// removeEnrollment deletes the enrollment with key k and what hangs on
// it. The caller holds s.mu.
func (s *Server) removeEnrollment(k string) {
	delete(s.st.Enrollments, k)
	delete(s.st.Challenges, k)
	for opID, op := range s.st.Operations {
		if regKey(op.RegistrationID) == k {
			delete(s.st.Operations, opID)
		}
	}
}

// validateEnrollment checks a written enrollment and fills in defaults. It
// returns the errorCode and message to answer with, or 0 and "". Every
// IoT hub the enrollment names must be one of linked: DPS answers 400 to
// an enrollment naming a hub not linked to the instance ([UNCONFIRMED]
// errorCode 400001 and the message; no source gives DPS's own, and
// iotHubHostName, deprecated, is held to the same rule).
func validateEnrollment(e *dpsservice.Enrollment, pathID string, linked []Hub) (int, string) {
	if e.RegistrationID != pathID {
		return codeBadRequest, "registrationId in the body does not match the request path."
	}
	if e.Attestation.Type != "tpm" {
		return codeBadRequest, fmt.Sprintf("Attestation type %q is not supported by this emulator; use tpm.", clip(e.Attestation.Type))
	}
	if e.Attestation.TPM == nil {
		return codeBadKey, msgEndorsementKey
	}
	// The EK must be able to receive an activation blob (docs/dps-protocol.md#building-the-blob).
	ek, err := activation.DecodePublic(e.Attestation.TPM.EndorsementKey)
	if err == nil {
		err = activation.CheckStorageKey(ek)
	}
	if err != nil {
		return codeBadKey, msgEndorsementKey
	}
	if srk := e.Attestation.TPM.StorageRootKey; len(srk) > 0 {
		if _, err := activation.DecodePublic(srk); err != nil {
			return codeBadKey, msgStorageRootKey
		}
	}
	switch e.ProvisioningStatus {
	case "":
		e.ProvisioningStatus = dpsservice.StatusEnabled
	case dpsservice.StatusEnabled, dpsservice.StatusDisabled:
	default:
		return codeBadRequest, fmt.Sprintf("provisioningStatus %q, want enabled or disabled.", clip(e.ProvisioningStatus))
	}
	if e.AllocationPolicy != "" && !validPolicy(e.AllocationPolicy) {
		return codeBadRequest, fmt.Sprintf("allocationPolicy %q is not supported; use hashed, static or geoLatency.", clip(e.AllocationPolicy))
	}
	for _, h := range append(slices.Clone(e.IoTHubs), e.IoTHubHostName) {
		if h == "" {
			continue
		}
		if !sas.ValidDNSName(h) {
			return codeBadRequest, fmt.Sprintf("IoT hub %q is not a host name.", clip(h))
		}
		if !slices.ContainsFunc(linked, func(l Hub) bool { return strings.EqualFold(l.HostName, h) }) {
			return codeBadRequest, fmt.Sprintf("IoT hub %s is not linked to this provisioning service.", h)
		}
	}
	if e.DeviceID != "" && registry.ValidateDeviceID(e.DeviceID) != nil {
		return codeBadRequest, fmt.Sprintf("deviceId %q is not valid.", clip(e.DeviceID))
	}
	if bytes.Equal(e.InitialTwin, []byte("null")) {
		e.InitialTwin = nil
	}
	if len(e.InitialTwin) > 0 {
		var twin map[string]json.RawMessage
		if json.Unmarshal(e.InitialTwin, &twin) != nil {
			return codeBadRequest, "initialTwin must be a JSON object."
		}
	}
	return 0, ""
}

// validRegistrationID applies DPS's rule: 1 to 128 letters, digits and
// - . _ : (registration IDs are case-insensitive). It returns the message
// to answer with, "" when valid.
func validRegistrationID(id string) string {
	if id == "" || len(id) > 128 {
		return fmt.Sprintf("Registration ID %q must have 1 to 128 characters.", clip(id))
	}
	for _, c := range id {
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.ContainsRune("-._:", c)) {
			return fmt.Sprintf("Registration ID %q may hold only letters, digits and - . _ :", clip(id))
		}
	}
	return ""
}

// etagMatches applies If-Match (RFC 9110 §13.1.1): "*" or one of the
// listed tags equal to the current one. Quotes and W/ are ignored, so a
// client that sends the bare value is not refused for its quoting.
func etagMatches(header string, e *dpsservice.Enrollment) bool {
	if e == nil {
		return false
	}
	for tag := range strings.SplitSeq(header, ",") {
		tag = strings.TrimSpace(tag)
		if tag == "*" || tag != "" && unquote(tag) == unquote(e.ETag) {
			return true
		}
	}
	return false
}

func unquote(tag string) string {
	return strings.Trim(strings.TrimPrefix(strings.TrimSpace(tag), "W/"), `"`)
}
