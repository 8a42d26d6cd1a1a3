package settings

import (
	"bytes"
	"flag"
	"fmt"
	"os"

	"github.com/edgetpm/edgetpm/internal/layered"
)

// The environment variables holding hierarchy passwords themselves.
const (
	EnvEndorsementAuth = "EDGE_TPM_ENDORSEMENT_AUTH"
	EnvOwnerAuth       = "EDGE_TPM_OWNER_AUTH"
	// EnvConfig names the settings file when --config does not.
	EnvConfig = "EDGE_PROVISIONER_CONFIG"
)

// Loader binds settings to a command's flags and, once they are parsed,
// layers defaults, the file, the environment and the flags.
type Loader struct {
	l *layered.Loader
	s Settings
}

// NewLoader registers --config and the flags of groups on fs. Flag values
// are applied again by Load, over the file, which is only known once
// --config is parsed, and over the environment.
func NewLoader(fs *flag.FlagSet, groups Group) *Loader {
	l := &Loader{s: Defaults()}
	var fields []layered.Field
	for _, f := range l.s.fields() {
		if f.group&groups == 0 {
			f.Flag = "" // the file and environment still set it
		}
		fields = append(fields, f.Field)
	}
	l.l = layered.NewLoader(fs, &l.s, layered.File{Env: EnvConfig, Default: DefaultPath}, fields)
	return l
}

// Load returns the settings: defaults, then the file (--config, else
// $EDGE_PROVISIONER_CONFIG, else DefaultPath when it exists), then the
// environment, then the flags, validated; then hierarchy passwords are
// read.
func (l *Loader) Load(getenv func(string) string) (*Settings, error) {
	if err := l.l.Load(getenv); err != nil {
		return nil, err
	}
	s := &l.s
	// A password in the environment beats a password file in the settings
	// file; a password file given as a flag beats the environment.
	endorsement, owner := getenv(EnvEndorsementAuth), getenv(EnvOwnerAuth)
	if l.l.Given("endorsement-auth-file") {
		endorsement = ""
	} else if endorsement != "" {
		s.TPM.EndorsementPasswordFile = ""
	}
	if l.l.Given("owner-auth-file") {
		owner = ""
	} else if owner != "" {
		s.TPM.OwnerPasswordFile = ""
	}
	var err error
	if s.TPM.EndorsementAuth, err = password(s.TPM.EndorsementPasswordFile, endorsement); err != nil {
		return nil, fmt.Errorf("tpm.endorsement_password_file: %w", err)
	}
	if s.TPM.OwnerAuth, err = password(s.TPM.OwnerPasswordFile, owner); err != nil {
		return nil, fmt.Errorf("tpm.owner_password_file: %w", err)
	}
	return s, nil
}

// password reads a hierarchy password from file when one is named, else
// takes the environment's value. One trailing newline in a file is not
// part of it.
func password(file, fromEnv string) ([]byte, error) {
	if file == "" {
		return []byte(fromEnv), nil
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("read hierarchy password: %w", err)
	}
	b = bytes.TrimSuffix(b, []byte("\n"))
	return bytes.TrimSuffix(b, []byte("\r")), nil
}

// FileError is a problem in the settings file at a line and column.
type FileError = layered.FileError

// Parse decodes a settings file over s; unknown keys and wrong types are
// errors at their line and column.
func Parse(path string, data []byte, s *Settings) error {
	return layered.Parse(path, data, s)
}
