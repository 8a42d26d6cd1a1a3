package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/edgetpm/edgetpm/internal/assignment"
	"github.com/edgetpm/edgetpm/internal/cli"
	"github.com/edgetpm/edgetpm/provisioner/childenv"
	"github.com/edgetpm/edgetpm/provisioner/edgeconfig"
	"github.com/edgetpm/edgetpm/provisioner/hubcred"
	"github.com/edgetpm/edgetpm/provisioner/settings"
	"github.com/edgetpm/edgetpm/provisioner/tpm"
)

// The hub identity kept in the TPM (docs/hub-identity.md): a device identity
// created in IoT Hub with a symmetric key, its key put in the TPM once by
// 'identity set' and never again outside it.

const identitySetSynopsis = `identity set [--hub HOST --device ID --key-file FILE | --connection-string-file FILE] [--force] [--tpm URI]

Puts an IoT Hub device identity with a symmetric key in the TPM: the key
where only the TPM can sign with it, the host name and device ID in TPM NV.
The key never comes from the command line: from --key-file or
--connection-string-file (- reads stdin), from $` + childenv.EnvDeviceKey + ` or
$` + childenv.EnvConnectionString + `, or, with none of them and a terminal on stdin,
pasted at a prompt that does not echo it. The host name and device ID come
from the connection string, or from --hub and --device ($EDGE_HUB_HOSTNAME,
$EDGE_HUB_DEVICE_ID). An identity already in the TPM is replaced; a key DPS
provisioned only with --force, which also removes the DPS assignment.
Refused, even with --force, while IoT Edge's config.toml (aziot.config)
provisions through DPS with the TPM: aziot would put DPS's key back.`

const identityClearSynopsis = `identity clear [--yes] [--tpm URI]

Removes the hub identity from the TPM: its key and its NV record. Asks
first on a terminal; without one, --yes is required.`

// errAziotDPS: IoT Edge's config.toml provisions the device through DPS
// with the TPM, so aziot would register again and put DPS's key over the
// hub identity's.
var errAziotDPS = errors.New("IoT Edge provisions this device through DPS with the TPM")

// maxSecretInput bounds what is read as a key or connection string: a
// connection string is some 200 bytes.
const maxSecretInput = 4096

// hubIdentityJSON is the hub identity in the JSON of identity and status.
type hubIdentityJSON struct {
	HostName string `json:"hostName"`
	DeviceID string `json:"deviceId"`
}

// readHubIdentity returns the TPM's hub identity, nil when it holds none.
func readHubIdentity(ctx context.Context, t *tpm.TPM) (*hubIdentityJSON, error) {
	id, err := t.HubIdentity(ctx)
	if errors.Is(err, tpm.ErrNoHubIdentity) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("hub identity: %w", err)
	}
	return &hubIdentityJSON{id.HostName, id.DeviceID}, nil
}

func runIdentitySet(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer, getenv env) error {
	fs := newFlagSet("identity set", identitySetSynopsis)
	l := settings.NewLoader(fs, settings.TPMGroup|settings.StateGroup)
	hub := fs.String("hub", getenv("EDGE_HUB_HOSTNAME"), "IoT hub `HOST` name, NAME.azure-devices.net, with --key-file")
	device := fs.String("device", getenv("EDGE_HUB_DEVICE_ID"), "device `ID`, with --key-file")
	keyFile := fs.String("key-file", "", "read the device's primary key, base64 as the portal shows it, from `FILE` (- reads stdin)")
	csFile := fs.String("connection-string-file", "", "read the device's primary connection string from `FILE` (- reads stdin)")
	force := fs.Bool("force", false, "replace a hub key DPS provisioned, and remove its DPS assignment")
	s, help, err := loadSettings(fs, l, args, stdout, getenv)
	if help || err != nil {
		return err
	}
	// Before the key is read: no point pasting it for nothing.
	if err := checkAziotDPS(s.Aziot.Config); err != nil {
		return err
	}
	cred, err := readCredential(stdin, stderr, getenv, *hub, *device, *keyFile, *csFile)
	if err != nil {
		return err
	}
	defer cred.Zero()

	// The key is created under the SRK: persist it (and the EK) first, as
	// identity does, so that one command does on a fresh TPM.
	t, _, err := openIdentity(ctx, s)
	if err != nil {
		return err
	}
	defer t.Close()
	st, err := t.Status(ctx)
	if err != nil {
		return err
	}
	prev, err := readHubIdentity(ctx, t)
	if err != nil {
		return err
	}
	// The rule SetHubIdentity applies: a key without a hub identity
	// record is DPS's.
	replacesDPS := st.AuthKey && prev == nil
	err = t.SetHubIdentity(ctx, tpm.HubIdentity{HostName: cred.HostName, DeviceID: cred.DeviceID}, cred.Key, *force)
	cred.Zero()
	if errors.Is(err, tpm.ErrReplacesDPS) {
		// The sentinel says what; the TPM's detail repeats it.
		return fmt.Errorf("%w (the key at %#x): 'identity set --force' replaces it with this identity's key and removes the DPS assignment", tpm.ErrReplacesDPS, st.AuthKeyHandle)
	}
	if errors.Is(err, tpm.ErrHubIdentity) {
		// What hubcred let through and the TPM's own check refuses; the
		// TPM was not touched.
		return cli.Usage(err)
	}
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "Hub identity set in the TPM: device %s at %s, key at %#x.\n", cred.DeviceID, cred.HostName, st.AuthKeyHandle)
	switch {
	case prev != nil:
		fmt.Fprintf(stdout, "It replaces device %s at %s.\n", prev.DeviceID, prev.HostName)
	case replacesDPS:
		fmt.Fprintln(stdout, "It replaces the key DPS provisioned.")
		if a, err := assignment.Load(s.State); err == nil && a.TPM == s.TPM.URI && a.AuthKeyHandle == st.AuthKeyHandle {
			// The assignment names a key that is gone: 'token' and
			// 'provision' must not take it for this device's.
			if err := os.Remove(s.State); err != nil {
				return fmt.Errorf("remove the DPS assignment, whose key was replaced: %w", err)
			}
			fmt.Fprintf(stdout, "Removed the DPS assignment %s: its key is gone.\n", s.State)
		}
	}
	fmt.Fprintf(stdout, "Run the relay with it: edge-relay --tpm %s (docs/hub-identity.md).\n", s.TPM.URI)
	return nil
}

// checkAziotDPS refuses when IoT Edge's config.toml at path provisions
// through DPS with the TPM: aziot-identityd registers again whenever it
// reprovisions (auto_reprovisioning_mode), and aziot-tpmd imports DPS's
// key at the auth key handle, over the hub identity's. --force does not override this: the remedy is in
// config.toml, not in the TPM.
func checkAziotDPS(path string) error {
	doc, err := edgeconfig.Load(path)
	if err != nil {
		return fmt.Errorf("IoT Edge's config: %w", err)
	}
	if p := doc.Provisioning(); p.Source == "dps" && p.Method == "tpm" {
		return fmt.Errorf("%w (%s): remove its [provisioning] section, or remove IoT Edge, before 'identity set'", errAziotDPS, path)
	}
	return nil
}

// readCredential reads the identity from exactly one source: a file or
// stdin named by a flag, else the environment, else a prompt on a
// terminal. Input that is no identity is a usage error.
func readCredential(stdin io.Reader, stderr io.Writer, getenv env, hub, device, keyFile, csFile string) (*hubcred.Credential, error) {
	if keyFile != "" && csFile != "" {
		return nil, cli.Usagef("identity set takes --key-file or --connection-string-file, not both")
	}
	var input []byte
	isCS := csFile != ""
	defer func() { clear(input) }()
	switch {
	case keyFile != "" || csFile != "":
		name := keyFile + csFile
		var err error
		if input, err = readSecret(stdin, name); err != nil {
			return nil, err
		}
	case getenv(childenv.EnvConnectionString) != "" && getenv(childenv.EnvDeviceKey) != "":
		return nil, cli.Usagef("set $%s or $%s, not both", childenv.EnvConnectionString, childenv.EnvDeviceKey)
	case getenv(childenv.EnvConnectionString) != "":
		input, isCS = []byte(getenv(childenv.EnvConnectionString)), true
	case getenv(childenv.EnvDeviceKey) != "":
		input = []byte(getenv(childenv.EnvDeviceKey))
	case isTerminal(stdin):
		isCS = hub == "" && device == ""
		prompt := "Paste the device's primary key (not echoed), then Enter: "
		if isCS {
			prompt = "Paste the device's primary connection string (not echoed), then Enter: "
		}
		var err error
		if input, err = promptSecret(stdin.(*os.File), stderr, prompt); err != nil {
			return nil, err
		}
	default:
		return nil, cli.Usagef("identity set needs the device's key: --connection-string-file FILE, or --hub, --device and --key-file FILE (- reads stdin), or $%s; never on the command line", childenv.EnvConnectionString)
	}
	if isCS {
		if hub != "" || device != "" {
			return nil, cli.Usagef("the connection string names the hub and the device: leave out --hub and --device")
		}
		c, err := hubcred.ParseConnectionString(input)
		return c, cli.Usage(err)
	}
	if hub == "" || device == "" {
		return nil, cli.Usagef("a key alone needs --hub HOST and --device ID (or the device's connection string instead)")
	}
	c, err := hubcred.New(hub, device, input)
	if err != nil {
		return nil, cli.Usage(fmt.Errorf("hub %q, device %q: %w", hub, device, err))
	}
	return c, nil
}

// readSecret reads a file, or stdin for "-", up to maxSecretInput bytes.
func readSecret(stdin io.Reader, name string) ([]byte, error) {
	r := stdin
	if name != "-" {
		f, err := os.Open(name)
		if err != nil {
			return nil, cli.Usage(err)
		}
		defer f.Close()
		r = f
	}
	buf := make([]byte, maxSecretInput+1)
	n, err := io.ReadFull(r, buf)
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) {
		clear(buf)
		return nil, fmt.Errorf("read %s: %w", name, err)
	}
	if n > maxSecretInput {
		clear(buf)
		return nil, cli.Usagef("%s holds more than %d bytes: not a key or connection string", name, maxSecretInput)
	}
	return buf[:n], nil
}

// isTerminal tells whether r is a terminal.
func isTerminal(r io.Reader) bool {
	f, ok := r.(*os.File)
	if !ok {
		return false
	}
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

// promptSecret reads one line from the terminal with echo off.
func promptSecret(tty *os.File, stderr io.Writer, prompt string) ([]byte, error) {
	fd := int(tty.Fd())
	old, err := unix.IoctlGetTermios(fd, unix.TCGETS)
	if err != nil {
		return nil, fmt.Errorf("terminal: %w", err)
	}
	quiet := *old
	quiet.Lflag &^= unix.ECHO
	quiet.Lflag |= unix.ICANON | unix.ECHONL
	if err := unix.IoctlSetTermios(fd, unix.TCSETS, &quiet); err != nil {
		return nil, fmt.Errorf("terminal: %w", err)
	}
	defer unix.IoctlSetTermios(fd, unix.TCSETS, old)
	fmt.Fprint(stderr, prompt)
	return readLine(tty)
}

// readLine reads one line, up to maxSecretInput bytes, byte by byte so
// that nothing past it is consumed and no buffer keeps a copy.
func readLine(r io.Reader) ([]byte, error) {
	line := make([]byte, 0, maxSecretInput)
	var b [1]byte
	for len(line) < maxSecretInput {
		n, err := r.Read(b[:])
		if n == 1 {
			if b[0] == '\n' {
				return line, nil
			}
			line = append(line, b[0])
		}
		if errors.Is(err, io.EOF) {
			return line, nil
		}
		if err != nil {
			clear(line)
			return nil, err
		}
	}
	clear(line)
	return nil, cli.Usagef("the line is longer than %d bytes: not a key or connection string", maxSecretInput)
}

func runIdentityClear(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer, getenv env) error {
	fs := newFlagSet("identity clear", identityClearSynopsis)
	l := settings.NewLoader(fs, settings.TPMGroup)
	yes := fs.Bool("yes", false, "do not ask for confirmation")
	s, help, err := loadSettings(fs, l, args, stdout, getenv)
	if help || err != nil {
		return err
	}
	if !*yes && !isTerminal(stdin) {
		return cli.Usagef("identity clear removes the hub identity and its key from the TPM: confirm with --yes (stdin is not a terminal to ask on)")
	}
	t, err := openTPM(s)
	if err != nil {
		return err
	}
	defer t.Close()
	id, err := readHubIdentity(ctx, t)
	if err != nil {
		return err
	}
	if id == nil {
		// A record can outlive its key (a crash between evicting the
		// key and removing the record, a key evicted by other tools):
		// readers ignore it, and clear removes it, leaving any other
		// key at the auth key handle in place.
		err := t.ClearHubIdentity(ctx)
		if errors.Is(err, tpm.ErrNoHubIdentity) {
			fmt.Fprintln(stdout, "The TPM holds no hub identity: nothing to clear.")
			return nil
		}
		if err != nil {
			return err
		}
		fmt.Fprintln(stdout, "Removed the hub identity record, which names no key in the TPM.")
		return nil
	}
	if !*yes {
		fmt.Fprintf(stderr, "Remove device %s at %s and its key from the TPM? The device cannot connect until it gets another identity. [y/N] ", id.DeviceID, id.HostName)
		answer, err := bufio.NewReader(io.LimitReader(stdin, 64)).ReadString('\n')
		if err != nil && !errors.Is(err, io.EOF) {
			return err
		}
		if a := strings.ToLower(strings.TrimSpace(answer)); a != "y" && a != "yes" {
			return errors.New("not confirmed: the hub identity is unchanged")
		}
	}
	if err := t.ClearHubIdentity(ctx); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "Removed device %s at %s and its key from the TPM.\n", id.DeviceID, id.HostName)
	return nil
}
