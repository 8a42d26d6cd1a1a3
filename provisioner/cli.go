package main

import (
	"context"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/google/go-tpm/tpm2"

	"github.com/edgetpm/edgetpm/internal/assignment"
	"github.com/edgetpm/edgetpm/internal/cli"
	"github.com/edgetpm/edgetpm/internal/sas"
	"github.com/edgetpm/edgetpm/provisioner/settings"
	"github.com/edgetpm/edgetpm/provisioner/tpm"
)

const usage = `usage: edge-provisioner COMMAND [flags]

Commands:
  identity   show the TPM's registration ID, endorsement key and storage root
             key, as an individual enrollment in DPS wants them, and the hub
             identity kept in the TPM
  identity set    put an IoT Hub device identity with a symmetric key (from
             the portal or 'az iot hub device-identity create') in the TPM
  identity clear  remove that identity and its key from the TPM
  register   register with DPS by TPM attestation and keep the IoT hub key
             it returns in the TPM
  token      print an IoT Hub SAS token signed inside the TPM, for the DPS
             assignment or the hub identity in the TPM
  provision  the whole flow: TPM, DPS registration, /etc/aziot/config.toml,
             apply, side-load images, wait for the runtime
  status     the TPM, the saved identity, config.toml and the runtime
  doctor     check everything provisioning needs, each with a remedy
  image load side-load image archives into containerd (or Docker)

Settings come from /etc/edge-provisioner/config.toml (--config), then the
environment, then flags.

Run 'edge-provisioner COMMAND --help' for the flags of a command.

` + cli.ExitStatus + `
provision exits 3 to 8 for the step that failed; see its --help.
`

// env looks up an environment variable (os.Getenv in main, a map in tests).
type env func(string) string

func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer, getenv env) error {
	if len(args) == 0 {
		return cli.Usagef("no command given")
	}
	cmds := map[string]func(context.Context, []string, io.Writer, io.Writer, env) error{
		"identity": func(ctx context.Context, args []string, stdout, stderr io.Writer, getenv env) error {
			if len(args) > 0 && args[0] == "set" {
				return runIdentitySet(ctx, args[1:], stdin, stdout, stderr, getenv)
			}
			if len(args) > 0 && args[0] == "clear" {
				return runIdentityClear(ctx, args[1:], stdin, stdout, stderr, getenv)
			}
			return runIdentity(ctx, args, stdout, stderr, getenv)
		},
		"register":  runRegister,
		"token":     runToken,
		"provision": runProvision,
		"status":    runStatus,
		"doctor":    runDoctor,
		"image":     runImage,
	}
	switch args[0] {
	case "-h", "-help", "--help", "help":
		fmt.Fprint(stdout, usage)
		return nil
	}
	cmd, ok := cmds[args[0]]
	if !ok {
		return cli.Usagef("unknown command %q", args[0])
	}
	return cmd(ctx, args[1:], stdout, stderr, getenv)
}

// loadSettings parses a command's flags, registered on fs with l, and
// loads its settings. A bad setting, wherever it came from, is a usage
// error.
func loadSettings(fs *flag.FlagSet, l *settings.Loader, args []string, stdout io.Writer, getenv env) (s *settings.Settings, help bool, err error) {
	rest, s, help, err := loadSettingsArgs(fs, l, args, stdout, getenv)
	if err == nil && !help && len(rest) > 0 {
		return nil, false, cli.Usagef("unexpected argument %q", rest[0])
	}
	return s, help, err
}

// loadSettingsArgs is loadSettings for a command that takes arguments
// after its flags.
func loadSettingsArgs(fs *flag.FlagSet, l *settings.Loader, args []string, stdout io.Writer, getenv env) (rest []string, s *settings.Settings, help bool, err error) {
	if help, err := parse(fs, args, stdout); help || err != nil {
		return nil, nil, help, err
	}
	if s, err = l.Load(getenv); err != nil {
		return nil, nil, false, cli.Usage(err)
	}
	return fs.Args(), s, false, nil
}

// openTPM opens the TPM the settings name.
func openTPM(s *settings.Settings) (*tpm.TPM, error) {
	return tpm.Open(s.TPM.URI, tpmConfig(s))
}

// openIdentity opens the TPM and reads its identity, persisting the EK and
// SRK when missing. The caller closes the TPM.
func openIdentity(ctx context.Context, s *settings.Settings) (*tpm.TPM, *tpm.Identity, error) {
	t, err := openTPM(s)
	if err != nil {
		return nil, nil, err
	}
	id, err := t.Identity(ctx)
	if err != nil {
		t.Close()
		return nil, nil, err
	}
	return t, id, nil
}

func tpmConfig(s *settings.Settings) tpm.Config {
	return tpm.Config{
		EndorsementAuth: s.TPM.EndorsementAuth,
		OwnerAuth:       s.TPM.OwnerAuth,
		AuthKeyHandle:   tpm.AuthKeyBase + tpm2.TPMHandle(s.TPM.AuthKeyIndex),
	}
}

// parse parses a command's flags; --help prints them on stdout and is not
// an error.
func parse(fs *flag.FlagSet, args []string, stdout io.Writer) (help bool, err error) {
	err = cli.ParseArgs(fs, args, stdout)
	if errors.Is(err, flag.ErrHelp) {
		return true, nil
	}
	return false, err
}

func newFlagSet(name, synopsis string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: edge-provisioner %s\n\n", synopsis)
		fs.PrintDefaults()
	}
	return fs
}

func runIdentity(ctx context.Context, args []string, stdout, stderr io.Writer, getenv env) error {
	fs := newFlagSet("identity", "identity [--tpm URI] [--json]\n       edge-provisioner identity set|clear --help")
	l := settings.NewLoader(fs, settings.TPMGroup)
	asJSON := fs.Bool("json", false, "print JSON: registrationId, endorsementKey, storageRootKey, endorsementKeyCertificate, eccEndorsementKeyCertificate, endorsementKeyCertificateChain")
	s, help, err := loadSettings(fs, l, args, stdout, getenv)
	if help || err != nil {
		return err
	}
	t, id, err := openIdentity(ctx, s)
	if err != nil {
		return err
	}
	defer t.Close()
	// A certificate left out is reported, not fatal: whoever enrolls the
	// device decides what to trust.
	for _, err := range id.CertificateErrors {
		fmt.Fprintf(stderr, "edge-provisioner identity: warning: %v\n", err)
	}
	hubID, hubErr := readHubIdentity(ctx, t)
	chain := make([]string, len(id.EKCertificateChain))
	for i, c := range id.EKCertificateChain {
		chain[i] = *certPEM(c)
	}
	ek, srk := base64.StdEncoding.EncodeToString(id.EndorsementKey), base64.StdEncoding.EncodeToString(id.StorageRootKey)
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(struct {
			RegistrationID   string   `json:"registrationId"`
			EndorsementKey   string   `json:"endorsementKey"`
			StorageRootKey   string   `json:"storageRootKey"`
			EKCertificate    *string  `json:"endorsementKeyCertificate"`
			ECCEKCertificate *string  `json:"eccEndorsementKeyCertificate"`
			EKChain          []string `json:"endorsementKeyCertificateChain"`
		}{id.RegistrationID, ek, srk, certPEM(id.EKCertificate), certPEM(id.ECCEKCertificate), chain})
	}
	fmt.Fprintf(stdout, "Registration ID:  %s\nEndorsement key:  %s\nStorage root key: %s\n", id.RegistrationID, ek, srk)
	if id.EKCertificate == nil {
		fmt.Fprintln(stdout, "EK certificate:   none in NV 0x01c00002")
	} else {
		fmt.Fprintf(stdout, "EK certificate:   %s, issued by %s\n%s", id.EKCertificate.Subject, id.EKCertificate.Issuer, *certPEM(id.EKCertificate))
	}
	if c := id.ECCEKCertificate; c == nil {
		fmt.Fprintln(stdout, "ECC EK certificate: none in NV 0x01c0000a")
	} else {
		fmt.Fprintf(stdout, "ECC EK certificate: %s, issued by %s\n", c.Subject, c.Issuer)
	}
	if len(id.EKCertificateChain) == 0 {
		fmt.Fprintln(stdout, "EK certificate chain: none in NV 0x01c00100-0x01c001ff")
	}
	for i, c := range id.EKCertificateChain {
		fmt.Fprintf(stdout, "EK certificate chain %d: %s, issued by %s\n", i+1, c.Subject, c.Issuer)
	}
	if len(id.CertificateErrors) > 0 {
		fmt.Fprintf(stdout, "Left out:         %d certificate(s) found in NV, see the warnings on stderr\n", len(id.CertificateErrors))
	}
	// The JSON above is what DPS enrollment reads (edge-deploy enroll), so
	// the hub identity is shown here and in status --json only.
	if hubErr != nil {
		fmt.Fprintf(stderr, "edge-provisioner identity: warning: %v\n", hubErr)
	}
	if hubID != nil {
		// A manual identity: DPS enrollment is beside the point.
		fmt.Fprintf(stdout, "Hub identity:     device %s at %s, key in the TPM (identity set)\n", hubID.DeviceID, hubID.HostName)
		return nil
	}
	fmt.Fprintln(stdout, "Hub identity:     none in the TPM (identity set puts one there)")
	fmt.Fprintln(stdout, "\nEnroll this device in DPS as an IoT Edge device: Manage enrollments > Add\nindividual enrollment > mechanism TPM, with the endorsement key and\nregistration ID above, and 'IoT Edge device' set to True. Without it the hub\ndevice is not an IoT Edge device and edgeAgent never gets its identity.")
	return nil
}

// certPEM encodes c in PEM; nil stays nil (JSON null).
func certPEM(c *x509.Certificate) *string {
	if c == nil {
		return nil
	}
	s := string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw}))
	return &s
}

func runToken(ctx context.Context, args []string, stdout, _ io.Writer, getenv env) error {
	fs := newFlagSet("token", "token [--hub HOST --device ID] [--module ID] [--ttl 1h] [--tpm URI]")
	l := settings.NewLoader(fs, settings.TPMGroup|settings.StateGroup)
	hub := fs.String("hub", "", "IoT hub `HOST` name, e.g. myhub.azure-devices.net (default: the TPM's hub identity's, else the DPS assignment's)")
	device := fs.String("device", "", "device `ID` (default: the TPM's hub identity's, else the DPS assignment's)")
	module := fs.String("module", "", "module `ID`, for a module token")
	ttl := fs.Duration("ttl", time.Hour, "lifetime of the token")
	s, help, err := loadSettings(fs, l, args, stdout, getenv)
	if help || err != nil {
		return err
	}
	if *ttl <= 0 {
		return cli.Usagef("--ttl must be positive")
	}
	if (*hub == "") != (*device == "") {
		return cli.Usagef("token needs both --hub and --device, or neither to use the TPM's hub identity or the DPS assignment")
	}
	t, err := openTPM(s)
	if err != nil {
		return err
	}
	defer t.Close()
	// Who signs: the flags, else the hub identity in the TPM, else the DPS
	// assignment. Only the hub identity record is tied to the key at the
	// auth key handle; an assignment can outlive its key ('identity set
	// --force' interrupted before it removed it, or naming the TPM by
	// another URI).
	if *hub == "" {
		id, herr := t.HubIdentity(ctx)
		switch {
		case herr == nil:
			*hub, *device = id.HostName, id.DeviceID
		case !errors.Is(herr, tpm.ErrNoHubIdentity):
			return fmt.Errorf("hub identity: %w", herr)
		default:
			a, err := assignment.Load(s.State)
			if errors.Is(err, os.ErrNotExist) {
				return cli.Usagef("token needs --hub and --device: no hub identity in the TPM and no DPS assignment (%w)", err)
			}
			if err != nil {
				return err
			}
			*hub, *device = a.AssignedHub, a.DeviceID
		}
	}
	resource := sas.DeviceResource(*hub, *device)
	if *module != "" {
		resource = sas.ModuleResource(*hub, *device, *module)
	}
	tok, err := sas.New(ctx, t, resource, "", time.Now().Add(*ttl))
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(stdout, tok)
	return err
}
