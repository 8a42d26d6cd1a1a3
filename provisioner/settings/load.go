package settings

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/pelletier/go-toml/v2"
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
	config string
	fields []field
	given  []flagValue // replayed in order after the file and environment
	s      Settings
}

// NewLoader registers --config and the flags of groups on fs. Flag values
// are applied again by Load, over the file, which is only known once
// --config is parsed, and over the environment.
func NewLoader(fs *flag.FlagSet, groups Group) *Loader {
	l := &Loader{s: Defaults()}
	fs.StringVar(&l.config, "config", "", "read settings from `FILE` (default $"+EnvConfig+", else "+DefaultPath+" when present)")
	l.fields = l.s.fields()
	for _, f := range l.fields {
		if f.group&groups == 0 {
			continue
		}
		where := f.key
		if f.env != "" {
			where += ", $" + f.env
		}
		fs.Var(&recorder{l: l, name: f.flag, v: f.value, isBool: f.inverted}, f.flag, f.usage+" ["+where+"]")
	}
	return l
}

// recorder applies a flag's value at once, so a bad one is a usage error
// while flags are parsed, and again in Load, over the file and environment.
type recorder struct {
	l      *Loader
	name   string
	v      flag.Value
	isBool bool
}

func (r *recorder) Set(s string) error {
	if err := r.v.Set(s); err != nil {
		return err
	}
	r.l.given = append(r.l.given, flagValue{r.name, func() error { return r.v.Set(s) }})
	return nil
}

func (r *recorder) String() string {
	if r == nil || r.v == nil {
		return ""
	}
	if r.isBool && r.v.String() == "false" {
		return "" // a --no-X flag not given: nothing to show as its default
	}
	return r.v.String()
}

func (r *recorder) IsBoolFlag() bool { return r != nil && r.isBool }

type flagValue struct {
	name string
	set  func() error
}

// Load returns the settings: defaults, then the file (--config, else
// $EDGE_PROVISIONER_CONFIG, else DefaultPath when it exists), then the
// environment, then the flags; hierarchy passwords are read; the result is
// validated.
func (l *Loader) Load(getenv func(string) string) (*Settings, error) {
	s := &l.s
	path, required := l.config, true
	if path == "" {
		path = getenv(EnvConfig)
	}
	if path == "" {
		path, required = DefaultPath, false
	}
	data, err := os.ReadFile(path)
	switch {
	case err == nil:
		if err := Parse(path, data, s); err != nil {
			return nil, err
		}
	case !required && errors.Is(err, os.ErrNotExist):
	default:
		return nil, fmt.Errorf("read settings: %w", err)
	}

	// The environment.
	endorsement, owner := getenv(EnvEndorsementAuth), getenv(EnvOwnerAuth)
	if endorsement != "" {
		s.TPM.EndorsementPasswordFile = ""
	}
	if owner != "" {
		s.TPM.OwnerPasswordFile = ""
	}
	for _, f := range l.fields {
		v := getenv(f.env)
		if f.env == "" || v == "" {
			continue
		}
		if err := setFromEnv(f, v); err != nil {
			return nil, fmt.Errorf("$%s=%q: %w", f.env, v, err)
		}
	}

	// The flags. A password file given as a flag beats the environment.
	for _, f := range l.fields {
		if lv, ok := f.value.(*listValue); ok {
			lv.touched = false
		}
	}
	for _, g := range l.given {
		if err := g.set(); err != nil {
			return nil, err
		}
		switch g.name {
		case "endorsement-auth-file":
			endorsement = ""
		case "owner-auth-file":
			owner = ""
		}
	}
	if s.TPM.EndorsementAuth, err = password(s.TPM.EndorsementPasswordFile, endorsement); err != nil {
		return nil, err
	}
	if s.TPM.OwnerAuth, err = password(s.TPM.OwnerPasswordFile, owner); err != nil {
		return nil, err
	}
	if err := s.Validate(); err != nil {
		return nil, err
	}
	return s, nil
}

// setFromEnv sets a field from its variable: booleans say the setting
// itself (EDGE_HEALTH_WAIT=false), lists are comma-separated.
func setFromEnv(f field, v string) error {
	switch val := f.value.(type) {
	case *invertedBool:
		b, err := strconv.ParseBool(v)
		if err != nil {
			return errors.New("want true or false")
		}
		*val = invertedBool(b)
		return nil
	case *listValue:
		*val.list = splitList(v)
		return nil
	}
	return f.value.Set(v)
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
type FileError struct {
	Path         string
	Line, Column int
	Msg          string
}

func (e *FileError) Error() string {
	return fmt.Sprintf("%s:%d:%d: %s", e.Path, e.Line, e.Column, e.Msg)
}

// Parse decodes a settings file over s; unknown keys and wrong types are
// errors at their line and column.
func Parse(path string, data []byte, s *Settings) error {
	dec := toml.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	err := dec.Decode(s)
	var strict *toml.StrictMissingError
	var de *toml.DecodeError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &strict):
		errs := make([]error, len(strict.Errors))
		for i, e := range strict.Errors {
			line, col := e.Position()
			errs[i] = &FileError{path, line, col, fmt.Sprintf("unknown key %q", strings.Join(e.Key(), "."))}
		}
		return errors.Join(errs...)
	case errors.As(err, &de):
		line, col := de.Position()
		return &FileError{path, line, col, de.Error()}
	default:
		return fmt.Errorf("%s: %w", path, err)
	}
}
