package tpm

import (
	"errors"
	"fmt"

	"github.com/google/go-tpm/tpm2"
)

// Errors callers branch on; the TPM's own code stays in the chain for
// errors.Is with tpm2.TPMRC values.
var (
	// ErrAuthorization: a hierarchy password is wrong.
	ErrAuthorization = errors.New("TPM authorization failed")
	// ErrLockout: the TPM refuses password checks after too many failures.
	ErrLockout = errors.New("TPM is in dictionary-attack lockout")
	// ErrNoAuthKey: no key has been activated at the auth key handle yet.
	ErrNoAuthKey = errors.New("no authentication key in the TPM")
)

// explain turns the TPM codes an operator can act on into plain words with
// the remedy. hierarchy names the hierarchy whose password was used ("" when
// none was).
func explain(err error, hierarchy string) error {
	switch {
	case errors.Is(err, tpm2.TPMRCLockout):
		return fmt.Errorf("%w after too many wrong passwords; wait for the lockout to expire, or clear it with the lockout password (tpm2_dictionarylockout --clear-lockout): %w", ErrLockout, err)
	case hierarchy != "" && (errors.Is(err, tpm2.TPMRCBadAuth) || errors.Is(err, tpm2.TPMRCAuthFail)):
		return fmt.Errorf("%w: the %s hierarchy password is wrong; give the right one in a file (--%s-auth-file) or in EDGE_TPM_%s_AUTH: %w",
			ErrAuthorization, hierarchy, hierarchy, envName(hierarchy), err)
	case errors.Is(err, tpm2.TPMRCHierarchy):
		return fmt.Errorf("the %s hierarchy is disabled (check the firmware's TPM settings): %w", hierarchy, err)
	case errors.Is(err, tpm2.TPMRCNVSpace):
		return fmt.Errorf("the TPM has no room for another persistent object; evict unused ones (tpm2_getcap handles-persistent, tpm2_evictcontrol): %w", err)
	}
	return err
}

func envName(hierarchy string) string {
	if hierarchy == "endorsement" {
		return "ENDORSEMENT"
	}
	return "OWNER"
}
