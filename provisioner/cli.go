package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/google/go-tpm/tpm2"

	"github.com/edgetpm/edgetpm/internal/assignment"
	"github.com/edgetpm/edgetpm/internal/sas"
	"github.com/edgetpm/edgetpm/provisioner/tpm"
)

// usageError is a mistake in the command line: exit code 2.
type usageError struct{ error }

func usagef(format string, args ...any) error { return usageError{fmt.Errorf(format, args...)} }

const usage = `usage: edge-provisioner COMMAND [flags]

Commands:
  identity   show the TPM's registration ID, endorsement key and storage root
             key, as an individual enrollment in DPS wants them
  register   register with DPS by TPM attestation and keep the IoT hub key
             it returns in the TPM
  token      print an IoT Hub SAS token signed inside the TPM

Run 'edge-provisioner COMMAND --help' for the flags of a command.
`

// env looks up an environment variable (os.Getenv in main, a map in tests).
type env func(string) string

func run(ctx context.Context, args []string, stdout, stderr io.Writer, getenv env) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return usagef("no command given")
	}
	cmds := map[string]func(context.Context, []string, io.Writer, io.Writer, env) error{
		"identity": runIdentity,
		"register": runRegister,
		"token":    runToken,
	}
	switch args[0] {
	case "-h", "-help", "--help", "help":
		fmt.Fprint(stdout, usage)
		return nil
	}
	cmd, ok := cmds[args[0]]
	if !ok {
		fmt.Fprint(stderr, usage)
		return usagef("unknown command %q", args[0])
	}
	return cmd(ctx, args[1:], stdout, stderr, getenv)
}

// tpmFlags are the TPM settings every command takes. Passwords come from a
// file or the environment, never from the command line, where any user
// could read them in the process list.
type tpmFlags struct {
	uri             string
	endorsementFile string
	ownerFile       string
	authKeyIndex    string
}

func (f *tpmFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.uri, "tpm", "", "TPM `URI`: device:/dev/tpmrm0, mssim://HOST:PORT or sim (default $EDGE_TPM, else "+tpm.DefaultURI+")")
	fs.StringVar(&f.endorsementFile, "endorsement-auth-file", "", "read the endorsement hierarchy password from `FILE` (default $EDGE_TPM_ENDORSEMENT_AUTH, else empty)")
	fs.StringVar(&f.ownerFile, "owner-auth-file", "", "read the owner hierarchy password from `FILE` (default $EDGE_TPM_OWNER_AUTH, else empty)")
	fs.StringVar(&f.authKeyIndex, "auth-key-index", "", "persistent handle of the DPS key, as an `INDEX` added to 0x81000000 like aziot's auth_key_index (default $EDGE_TPM_AUTH_KEY_INDEX, else 0x100)")
}

func (f *tpmFlags) open(getenv env) (*tpm.TPM, error) {
	uri, cfg, err := f.resolve(getenv)
	if err != nil {
		return nil, err
	}
	return tpm.Open(uri, cfg)
}

// resolve applies the environment to the flags: the TPM's URI and config.
func (f *tpmFlags) resolve(getenv env) (uri string, cfg tpm.Config, err error) {
	uri = f.uri
	if uri == "" {
		uri = getenv("EDGE_TPM")
	}
	if uri == "" {
		uri = tpm.DefaultURI
	}
	if cfg.EndorsementAuth, err = secret(f.endorsementFile, getenv("EDGE_TPM_ENDORSEMENT_AUTH")); err != nil {
		return "", cfg, err
	}
	if cfg.OwnerAuth, err = secret(f.ownerFile, getenv("EDGE_TPM_OWNER_AUTH")); err != nil {
		return "", cfg, err
	}
	cfg.AuthKeyHandle = tpm.DefaultAuthKeyHandle
	idx := f.authKeyIndex
	if idx == "" {
		idx = getenv("EDGE_TPM_AUTH_KEY_INDEX")
	}
	if idx != "" {
		n, err := strconv.ParseUint(idx, 0, 32)
		if err != nil || n > 0x7FFFFF {
			return "", cfg, usagef("auth key index %q: want a number from 0 to 0x7fffff", idx)
		}
		cfg.AuthKeyHandle = tpm.AuthKeyBase + tpm2.TPMHandle(n)
	}
	return uri, cfg, nil
}

// secret reads a password from file when one is named, else takes the
// environment's value. One trailing newline in a file is not part of it.
func secret(file, fromEnv string) ([]byte, error) {
	if file == "" {
		return []byte(fromEnv), nil
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("read hierarchy password: %w", err)
	}
	s := strings.TrimSuffix(strings.TrimSuffix(string(b), "\n"), "\r")
	return []byte(s), nil
}

// parse parses a command's flags; --help prints them and is not an error.
func parse(fs *flag.FlagSet, args []string, stdout io.Writer) (help bool, err error) {
	fs.SetOutput(io.Discard)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fs.SetOutput(stdout)
			fs.Usage()
			return true, nil
		}
		return false, usageError{err}
	}
	if fs.NArg() > 0 {
		return false, usagef("unexpected argument %q", fs.Arg(0))
	}
	return false, nil
}

func newFlagSet(name, synopsis string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: edge-provisioner %s\n\n", synopsis)
		fs.PrintDefaults()
	}
	return fs
}

func runIdentity(ctx context.Context, args []string, stdout, _ io.Writer, getenv env) error {
	fs := newFlagSet("identity", "identity [--tpm URI] [--json]")
	var tf tpmFlags
	tf.register(fs)
	asJSON := fs.Bool("json", false, "print JSON: registrationId, endorsementKey, storageRootKey, endorsementKeyCertificate")
	if help, err := parse(fs, args, stdout); help || err != nil {
		return err
	}
	t, err := tf.open(getenv)
	if err != nil {
		return err
	}
	defer t.Close()
	id, err := t.Identity(ctx)
	if err != nil {
		return err
	}
	var certPEM *string
	if id.EKCertificate != nil {
		s := string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: id.EKCertificate.Raw}))
		certPEM = &s
	}
	ek, srk := base64.StdEncoding.EncodeToString(id.EndorsementKey), base64.StdEncoding.EncodeToString(id.StorageRootKey)
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(struct {
			RegistrationID string  `json:"registrationId"`
			EndorsementKey string  `json:"endorsementKey"`
			StorageRootKey string  `json:"storageRootKey"`
			EKCertificate  *string `json:"endorsementKeyCertificate"`
		}{id.RegistrationID, ek, srk, certPEM})
	}
	fmt.Fprintf(stdout, "Registration ID:  %s\nEndorsement key:  %s\nStorage root key: %s\n", id.RegistrationID, ek, srk)
	if certPEM == nil {
		fmt.Fprintln(stdout, "EK certificate:   none in NV 0x01c00002")
	} else {
		fmt.Fprintf(stdout, "EK certificate:   %s, issued by %s\n%s", id.EKCertificate.Subject, id.EKCertificate.Issuer, *certPEM)
	}
	fmt.Fprintln(stdout, "\nEnroll this device in DPS: Manage enrollments > Add individual enrollment >\nmechanism TPM, with the endorsement key and registration ID above.")
	return nil
}

func runToken(ctx context.Context, args []string, stdout, _ io.Writer, getenv env) error {
	fs := newFlagSet("token", "token [--hub HOST --device ID] [--module ID] [--ttl 1h] [--tpm URI]")
	var tf tpmFlags
	tf.register(fs)
	hub := fs.String("hub", "", "IoT hub `HOST` name, e.g. myhub.azure-devices.net (default: the DPS assignment's)")
	device := fs.String("device", "", "device `ID` (default: the DPS assignment's)")
	module := fs.String("module", "", "module `ID`, for a module token")
	ttl := fs.Duration("ttl", time.Hour, "lifetime of the token")
	statePath := stateFlag(fs, getenv)
	if help, err := parse(fs, args, stdout); help || err != nil {
		return err
	}
	if *ttl <= 0 {
		return usagef("--ttl must be positive")
	}
	if *hub == "" || *device == "" {
		if *hub != "" || *device != "" {
			return usagef("token needs both --hub and --device, or neither to use the DPS assignment")
		}
		a, err := assignment.Load(*statePath)
		if errors.Is(err, os.ErrNotExist) {
			return usageError{fmt.Errorf("token needs --hub and --device: %w", err)}
		}
		if err != nil {
			return err
		}
		*hub, *device = a.AssignedHub, a.DeviceID
	}
	resource := sas.DeviceResource(*hub, *device)
	if *module != "" {
		resource = sas.ModuleResource(*hub, *device, *module)
	}
	t, err := tf.open(getenv)
	if err != nil {
		return err
	}
	defer t.Close()
	tok, err := sas.New(ctx, t, resource, "", time.Now().Add(*ttl))
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(stdout, tok)
	return err
}
