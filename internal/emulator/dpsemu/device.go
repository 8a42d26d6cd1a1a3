package dpsemu

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/google/go-tpm/tpm2"

	"github.com/edgetpm/edgetpm/internal/activation"
	"github.com/edgetpm/edgetpm/internal/dpsservice"
	"github.com/edgetpm/edgetpm/internal/sas"
)

// deviceAPIVersions are those the SDKs send (docs/dps-protocol.md#endpoints-and-headers).
var deviceAPIVersions = []string{"2019-03-31", "2021-06-01", "2021-10-01"}

// Registration statuses (EnrollmentStatus in Azure's REST API spec, docs/dps-protocol.md#registering-and-polling).
const (
	statusAssigning = "assigning"
	statusAssigned  = "assigned"
	statusFailed    = "failed"
	statusDisabled  = "disabled"
)

// registerRequest is the body of both register PUTs (docs/dps-protocol.md#request-bodies).
type registerRequest struct {
	RegistrationID string                     `json:"registrationId"`
	TPM            *dpsservice.TPMAttestation `json:"tpm"`
	Payload        json.RawMessage            `json:"payload"`
}

type challengeResponse struct {
	Message                      string  `json:"message"`
	AuthenticationKey            []byte  `json:"authenticationKey"`
	UnencryptedAuthenticationKey *string `json:"unencryptedAuthenticationKey"`
	KeyName                      string  `json:"keyName"`
}

type operationStatus struct {
	OperationID       string              `json:"operationId"`
	Status            string              `json:"status"`
	RegistrationState *registrationResult `json:"registrationState,omitempty"`
}

// deviceRequest runs the checks every device API request shares and
// reports whether the request may go on.
func (s *Server) deviceRequest(w http.ResponseWriter, r *http.Request, method string) bool {
	if s.injectFault(w, r, &s.deviceFaults) {
		return false
	}
	if r.Method != method {
		w.Header().Set("Allow", method)
		s.writeError(w, http.StatusMethodNotAllowed, codeMethod, fmt.Sprintf("Method %s is not allowed here; use %s.", r.Method, method))
		return false
	}
	v := r.URL.Query().Get("api-version")
	for _, ok := range deviceAPIVersions {
		if v == ok {
			return true
		}
	}
	s.writeError(w, http.StatusBadRequest, codeBadRequest, fmt.Sprintf("api-version %q is not supported; use one of %s.", clip(v), strings.Join(deviceAPIVersions, ", ")))
	return false
}

// register handles PUT /{scope}/registrations/{regID}/register: without
// Authorization it issues the TPM challenge (docs/dps-protocol.md#the-challenge), with it it
// starts an operation (docs/dps-protocol.md#registering-and-polling).
func (s *Server) register(w http.ResponseWriter, r *http.Request) {
	if !s.deviceRequest(w, r, http.MethodPut) {
		return
	}
	scope, regID := r.PathValue("scope"), r.PathValue("regID")
	var req registerRequest
	if err := readBody(r, &req); err != nil {
		s.writeError(w, http.StatusBadRequest, codeBadRequest, err.Error())
		return
	}
	if req.RegistrationID != regID {
		s.writeError(w, http.StatusBadRequest, codeBadRequest, "registrationId in the body does not match the request path.")
		return
	}
	if bytes.Equal(req.Payload, []byte("null")) {
		req.Payload = nil
	}
	log := s.log.With().Str("registration_id", regID).Logger()

	s.mu.Lock()
	defer s.mu.Unlock()
	enr := s.enrollmentFor(scope, regID)
	if enr == nil {
		// No challenge for an unknown scope or registration: nothing says
		// whether it exists (docs/dps-protocol.md#errors).
		log.Warn().Msg("registration rejected: no enrollment")
		s.writeError(w, http.StatusUnauthorized, codeUnauthorized, msgUnauthorized)
		return
	}
	if auth := r.Header.Get("Authorization"); auth != "" {
		s.startOperation(w, enr, regID, auth, &req)
		return
	}
	s.challenge(w, enr, regID, &req)
}

// enrollmentFor returns the enrollment of regID in scope, nil when there is
// none. s.mu is held.
func (s *Server) enrollmentFor(scope, regID string) *dpsservice.Enrollment {
	if !strings.EqualFold(scope, s.st.IDScope) {
		return nil
	}
	return s.st.Enrollments[regKey(regID)]
}

// challenge checks the TPM's keys against the enrollment and answers 401
// with a fresh key K wrapped for that TPM (docs/dps-protocol.md#the-challenge, #building-the-blob).
func (s *Server) challenge(w http.ResponseWriter, enr *dpsservice.Enrollment, regID string, req *registerRequest) {
	log := s.log.With().Str("registration_id", regID).Logger()
	if req.TPM == nil {
		s.writeError(w, http.StatusBadRequest, codeBadRequest, "Request carries no tpm attestation.")
		return
	}
	if enr.Attestation.Type != "tpm" || enr.Attestation.TPM == nil {
		log.Warn().Msg("registration rejected: enrollment does not use tpm attestation")
		s.writeError(w, http.StatusUnauthorized, codeUnauthorized, msgUnauthorized)
		return
	}
	if !sameKey(req.TPM.EndorsementKey, enr.Attestation.TPM.EndorsementKey) {
		log.Warn().Msg("registration rejected: endorsement key does not match")
		s.writeError(w, http.StatusBadRequest, codeBadKey, msgEndorsementKey)
		return
	}
	srk, err := activation.DecodePublic(req.TPM.StorageRootKey)
	if err == nil {
		err = activation.CheckStorageKey(srk)
	}
	if err != nil {
		log.Warn().Err(err).Msg("registration rejected: bad storage root key")
		s.writeError(w, http.StatusBadRequest, codeBadKey, msgStorageRootKey)
		return
	}
	key, err := s.random(32)
	if err != nil {
		s.internalError(w, err)
		return
	}
	blob, err := activation.Build(s.rand, enr.Attestation.TPM.EndorsementKey, req.TPM.StorageRootKey, key, nil)
	if errors.Is(err, activation.ErrKey) {
		log.Warn().Err(err).Msg("registration rejected: unusable TPM key")
		s.writeError(w, http.StatusBadRequest, codeBadKey, msgEndorsementKey)
		return
	}
	if err != nil {
		s.internalError(w, err)
		return
	}
	s.st.Challenges[regKey(regID)] = &challenge{Key: key, StorageRootKey: bytes.Clone(req.TPM.StorageRootKey), Expires: s.now().Add(s.ttl)}
	if err := s.save(); err != nil {
		s.internalError(w, err)
		return
	}
	log.Info().Msg("challenge issued")
	s.writeJSON(w, http.StatusUnauthorized, challengeResponse{
		Message:           msgChallenge,
		AuthenticationKey: blob,
		KeyName:           sas.RegistrationKeyName,
	}, "")
}

// sameKey reports whether two TPM2B_PUBLIC areas hold the same TPMT_PUBLIC.
func sameKey(a, b []byte) bool {
	pa, err := activation.DecodePublic(a)
	if err != nil {
		return false
	}
	pb, err := activation.DecodePublic(b)
	if err != nil {
		return false
	}
	return bytes.Equal(tpm2.Marshal(pa), tpm2.Marshal(pb))
}

// authorize verifies a registration token as docs/dps-protocol.md#registration-sas-token says and
// returns the challenge it was signed with. The error text is safe to send:
// it never holds the token. s.mu is held.
func (s *Server) authorize(regID, header string) (*challenge, error) {
	tok, err := sas.Parse(header)
	if err != nil {
		return nil, err
	}
	if tok.KeyName != sas.RegistrationKeyName {
		return nil, fmt.Errorf("SAS key name %q, want %q", clip(tok.KeyName), sas.RegistrationKeyName)
	}
	if err := tok.MatchAudience(sas.DPSResource(s.st.IDScope, regID)); err != nil {
		return nil, err
	}
	ch := s.st.Challenges[regKey(regID)]
	if ch == nil || !s.now().Before(ch.Expires) {
		return nil, errors.New("no challenge key is pending for this registration; register without a token first")
	}
	if err := tok.Verify(ch.Key, s.now()); err != nil {
		return nil, err
	}
	return ch, nil
}

// startOperation handles the authorised PUT (docs/dps-protocol.md#registering-and-polling): it always
// answers 202 "assigning", however soon the result is ready.
func (s *Server) startOperation(w http.ResponseWriter, enr *dpsservice.Enrollment, regID, auth string, req *registerRequest) {
	log := s.log.With().Str("registration_id", regID).Logger()
	ch, err := s.authorize(regID, auth)
	if err == nil && enr.Attestation.TPM == nil {
		err = errors.New("the enrollment does not use tpm attestation")
	}
	if err != nil {
		log.Warn().Err(err).Msg("registration rejected: bad token")
		s.writeError(w, http.StatusUnauthorized, codeUnauthorized, msgUnauthorized+": "+err.Error())
		return
	}
	// The C, Node and C# SDKs resend the keys; IIS does not (docs/dps-protocol.md#request-bodies).
	if req.TPM != nil {
		if !sameKey(req.TPM.EndorsementKey, enr.Attestation.TPM.EndorsementKey) {
			log.Warn().Msg("registration rejected: endorsement key does not match")
			s.writeError(w, http.StatusBadRequest, codeBadKey, msgEndorsementKey)
			return
		}
		if !sameKey(req.TPM.StorageRootKey, ch.StorageRootKey) {
			log.Warn().Msg("registration rejected: storage root key differs from the challenged one")
			s.writeError(w, http.StatusUnauthorized, codeUnauthorized, msgUnauthorized+": storage root key differs from the one the challenge was made for")
			return
		}
	}
	id, err := s.operationID()
	if err != nil {
		s.internalError(w, err)
		return
	}
	now := s.now()
	// Only the latest operation of a registration is kept.
	for k, op := range s.st.Operations {
		if strings.EqualFold(op.RegistrationID, enr.RegistrationID) {
			delete(s.st.Operations, k)
		}
	}
	s.st.Operations[id] = &operation{
		ID:             id,
		RegistrationID: enr.RegistrationID,
		Created:        now,
		ReadyAt:        now.Add(s.assignDelay),
		StorageRootKey: bytes.Clone(ch.StorageRootKey),
		Payload:        req.Payload,
	}
	if err := s.save(); err != nil {
		s.internalError(w, err)
		return
	}
	log.Info().Str("operation_id", id).Msg("registration started")
	setRetryAfter(w, s.retryAfter)
	s.writeJSON(w, http.StatusAccepted, operationStatus{OperationID: id, Status: statusAssigning}, "")
}

// operation handles GET /{scope}/registrations/{regID}/operations/{opID}
// (docs/dps-protocol.md#registering-and-polling): 202 while assigning, then 200 with the final state, on
// every poll.
func (s *Server) operation(w http.ResponseWriter, r *http.Request) {
	if !s.deviceRequest(w, r, http.MethodGet) {
		return
	}
	scope, regID, opID := r.PathValue("scope"), r.PathValue("regID"), r.PathValue("opID")
	log := s.log.With().Str("registration_id", regID).Str("operation_id", opID).Logger()

	s.mu.Lock()
	defer s.mu.Unlock()
	enr := s.enrollmentFor(scope, regID)
	if enr == nil {
		log.Warn().Msg("poll rejected: no enrollment")
		s.writeError(w, http.StatusUnauthorized, codeUnauthorized, msgUnauthorized)
		return
	}
	if _, err := s.authorize(regID, r.Header.Get("Authorization")); err != nil {
		log.Warn().Err(err).Msg("poll rejected: bad token")
		s.writeError(w, http.StatusUnauthorized, codeUnauthorized, msgUnauthorized+": "+err.Error())
		return
	}
	op := s.st.Operations[opID]
	if op == nil || !strings.EqualFold(op.RegistrationID, regID) {
		s.writeError(w, http.StatusNotFound, codeNoOperation, "Operation not found.")
		return
	}
	if op.Result == nil {
		if s.now().Before(op.ReadyAt) {
			// IIS needs registrationState.registrationId while assigning.
			setRetryAfter(w, s.retryAfter)
			s.writeJSON(w, http.StatusAccepted, operationStatus{
				OperationID:       op.ID,
				Status:            statusAssigning,
				RegistrationState: &registrationResult{RegistrationState: dpsservice.RegistrationState{RegistrationID: op.RegistrationID, Status: statusAssigning}},
			}, "")
			return
		}
		res, err := s.assign(enr, op)
		if err != nil {
			s.internalError(w, err)
			return
		}
		op.Result = res
		if err := s.save(); err != nil {
			s.internalError(w, err)
			return
		}
		ev := log.Info().Str("status", res.Status)
		if res.AssignedHub != "" {
			ev = ev.Str("hub", res.AssignedHub).Str("device_id", res.DeviceID)
		}
		if res.ErrorCode != 0 {
			ev = ev.Int("error_code", res.ErrorCode)
		}
		ev.Msg("registration finished")
	}
	s.writeJSON(w, http.StatusOK, operationStatus{OperationID: op.ID, Status: op.Result.Status, RegistrationState: op.Result}, "")
}

func (s *Server) internalError(w http.ResponseWriter, err error) {
	s.log.Error().Err(err).Msg("internal error")
	s.writeError(w, http.StatusInternalServerError, codeInternal, "Internal error.")
}

// clip shortens what an error message quotes from a request.
func clip(v string) string {
	const max = 64
	if len(v) > max {
		v = v[:max] + "…"
	}
	return strings.ToValidUTF8(v, "?")
}
