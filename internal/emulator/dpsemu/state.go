package dpsemu

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/edgetpm/edgetpm/internal/atomicfile"
	"github.com/edgetpm/edgetpm/internal/dpsservice"
)

// state is everything the emulator remembers, and the state file's form.
// s.mu guards it.
type state struct {
	IDScope    string `json:"idScope"`
	ServiceKey []byte `json:"serviceKey"`
	// Enrollments, challenges and operations are keyed by the lowercased
	// registration ID (DPS registration IDs are case-insensitive) or by
	// operation ID.
	Enrollments map[string]*dpsservice.Enrollment `json:"enrollments"`
	Challenges  map[string]*challenge             `json:"challenges"`
	Operations  map[string]*operation             `json:"operations"`
}

// challenge is the key K of a 401 challenge (docs/dps-protocol.md#the-challenge) and the SRK
// it was wrapped for.
type challenge struct {
	Key            []byte    `json:"key"`
	StorageRootKey []byte    `json:"storageRootKey"`
	Expires        time.Time `json:"expires"`
}

// operation is a registration started by an authorised PUT.
type operation struct {
	ID             string          `json:"id"`
	RegistrationID string          `json:"registrationId"`
	Created        time.Time       `json:"created"`
	ReadyAt        time.Time       `json:"readyAt"`
	StorageRootKey []byte          `json:"storageRootKey"`
	Payload        json.RawMessage `json:"payload,omitempty"`
	// Result is the final registration state, nil while assigning.
	Result *registrationResult `json:"result,omitempty"`
}

// registrationResult is the device API's registrationState
// (DeviceRegistrationResult in Azure's REST API spec, docs/dps-protocol.md#registering-and-polling).
type registrationResult struct {
	dpsservice.RegistrationState
	TPM     *tpmResult      `json:"tpm,omitempty"`
	Payload json.RawMessage `json:"payload,omitempty"`
}

type tpmResult struct {
	AuthenticationKey []byte `json:"authenticationKey"`
}

func regKey(registrationID string) string { return strings.ToLower(registrationID) }

// loadState reads the state file, or starts a new state from the
// configuration, and saves it so that the identity survives a restart that
// comes before any change.
func (s *Server) loadState(scope string, key []byte) error {
	if scope != "" && !validScope(scope) {
		return fmt.Errorf("ID scope %q: want 1 to 64 letters and digits", scope)
	}
	if s.stateFile != "" {
		data, err := os.ReadFile(s.stateFile)
		switch {
		case err == nil:
			if err := json.Unmarshal(data, &s.st); err != nil {
				return fmt.Errorf("load DPS state %s: %w", s.stateFile, err)
			}
			if !validScope(s.st.IDScope) || len(s.st.ServiceKey) == 0 {
				return fmt.Errorf("load DPS state %s: no ID scope or service key", s.stateFile)
			}
			if scope != "" && scope != s.st.IDScope {
				return fmt.Errorf("DPS state %s holds ID scope %s, not %s", s.stateFile, s.st.IDScope, scope)
			}
			if len(key) != 0 && !bytes.Equal(key, s.st.ServiceKey) {
				return fmt.Errorf("DPS state %s holds another service key than the one configured", s.stateFile)
			}
		case errors.Is(err, os.ErrNotExist):
		default:
			return fmt.Errorf("load DPS state: %w", err)
		}
	}
	if s.st.IDScope == "" {
		s.st.IDScope = scope
	}
	if s.st.IDScope == "" {
		b, err := s.random(4)
		if err != nil {
			return err
		}
		s.st.IDScope = fmt.Sprintf("0ne%08X", b)
	}
	if len(s.st.ServiceKey) == 0 {
		s.st.ServiceKey = bytes.Clone(key)
	}
	if len(s.st.ServiceKey) == 0 {
		b, err := s.random(32)
		if err != nil {
			return err
		}
		s.st.ServiceKey = b
	}
	if s.st.Enrollments == nil {
		s.st.Enrollments = map[string]*dpsservice.Enrollment{}
	}
	if s.st.Challenges == nil {
		s.st.Challenges = map[string]*challenge{}
	}
	if s.st.Operations == nil {
		s.st.Operations = map[string]*operation{}
	}
	return s.save()
}

// save writes the state file; s.mu is held (or the server is not shared
// yet). Expired challenges are dropped first.
func (s *Server) save() error {
	now := s.now()
	for k, c := range s.st.Challenges {
		if !now.Before(c.Expires) {
			delete(s.st.Challenges, k)
		}
	}
	if s.stateFile == "" {
		return nil
	}
	data, err := json.MarshalIndent(&s.st, "", "  ")
	if err != nil {
		return fmt.Errorf("save DPS state: %w", err)
	}
	if err := atomicfile.WriteFile(s.stateFile, append(data, '\n'), 0o600); err != nil {
		return fmt.Errorf("save DPS state: %w", err)
	}
	return nil
}

func validScope(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for _, c := range s {
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9') {
			return false
		}
	}
	return true
}
