package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/rs/zerolog"

	"github.com/edgetpm/edgetpm/internal/assignment"
	"github.com/edgetpm/edgetpm/internal/cli"
	"github.com/edgetpm/edgetpm/internal/tlsconfig"
	"github.com/edgetpm/edgetpm/provisioner/dps"
	"github.com/edgetpm/edgetpm/provisioner/settings"
	"github.com/edgetpm/edgetpm/provisioner/tpm"
)

func runRegister(ctx context.Context, args []string, stdout, stderr io.Writer, getenv env) error {
	fs := newFlagSet("register", "register --id-scope SCOPE [--endpoint URL] [--registration-id ID] [--payload FILE] [--ca-file PEM] [--tpm URI] [--force] [--json]")
	l := settings.NewLoader(fs, settings.TPMGroup|settings.DPSGroup|settings.StateGroup)
	asJSON := fs.Bool("json", false, "print the result as JSON")
	force := fs.Bool("force", false, "replace a hub identity set by 'identity set' with the key DPS provisions")
	s, help, err := loadSettings(fs, l, args, stdout, getenv)
	if help || err != nil {
		return err
	}
	if s.DPS.IDScope == "" {
		return cli.Usagef("register needs --id-scope (or dps.id_scope in the settings file)")
	}
	// Fail on an unwritable state folder before touching DPS or the TPM.
	if err := checkWritable(s.State); err != nil {
		return err
	}
	t, id, err := openIdentity(ctx, s)
	if err != nil {
		return err
	}
	defer t.Close()
	// The key DPS provisions replaces the one at the auth key handle, as
	// 'identity set' replaces a DPS key: only with --force either way.
	if !*force {
		hub, err := readHubIdentity(ctx, t)
		if err != nil {
			return err
		}
		if hub != nil {
			return fmt.Errorf("%w: device %s at %s; registering with DPS replaces its key. "+
				"Run 'edge-provisioner identity clear' first, or register --force (docs/hub-identity.md)", errHubIdentity, hub.DeviceID, hub.HostName)
		}
	}
	res, err := register(ctx, s, t, id, progressLog(stderr))
	if err != nil {
		return err
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(struct {
			*dps.Result
			State string `json:"state"`
		}{res, s.State})
	}
	fmt.Fprintf(stdout, "Assigned hub:     %s\nDevice ID:        %s\nStatus:           %s (%s)\nRegistration ID:  %s\nSaved to:         %s\n",
		res.AssignedHub, res.DeviceID, res.Status, res.Substatus, res.RegistrationID, s.State)
	fmt.Fprintf(stdout, "Took %v: TPM %v, HTTP %v in %d requests, waiting %v over %d polls\n",
		(res.Timing.TPM + res.Timing.HTTP + res.Timing.Wait).Round(time.Millisecond), res.Timing.TPM.Round(time.Millisecond), res.Timing.HTTP.Round(time.Millisecond),
		res.Timing.Requests, res.Timing.Wait.Round(time.Millisecond), res.Timing.Polls)
	return nil
}

// progressLog writes one line per step to w, with the time of day.
func progressLog(w io.Writer) zerolog.Logger {
	return zerolog.New(zerolog.ConsoleWriter{Out: w, TimeFormat: time.TimeOnly, NoColor: true}).With().Timestamp().Logger()
}

// register registers the TPM's identity with DPS, keeps the hub key in the
// TPM and saves the assignment.
func register(ctx context.Context, s *settings.Settings, t *tpm.TPM, id *tpm.Identity, log zerolog.Logger) (*dps.Result, error) {
	var payload json.RawMessage
	if s.DPS.PayloadFile != "" {
		b, err := os.ReadFile(s.DPS.PayloadFile)
		if err != nil {
			return nil, fmt.Errorf("read payload: %w", err)
		}
		if !json.Valid(b) {
			return nil, fmt.Errorf("payload %s is not JSON", s.DPS.PayloadFile)
		}
		payload = b
	}
	roots, err := tlsconfig.TrustFile(s.DPS.CAFile)
	if err != nil {
		return nil, err
	}
	if err := checkWritable(s.State); err != nil {
		return nil, err
	}
	regID := registrationID(s, id)
	c := &dps.Client{IDScope: s.DPS.IDScope, Endpoint: s.DPS.Endpoint, HTTP: dps.NewHTTPClient(roots), Timeout: time.Duration(s.DPS.Timeout), Log: log}
	log.Info().Str("registration_id", regID).Str("endpoint", s.DPS.Endpoint).Msg("registering")
	res, err := c.Register(ctx, t, dps.Request{
		RegistrationID: regID,
		EndorsementKey: id.EndorsementKey,
		StorageRootKey: id.StorageRootKey,
		Payload:        payload,
	})
	if err != nil {
		return nil, err
	}
	a := &assignment.Assignment{
		IDScope: s.DPS.IDScope, Endpoint: s.DPS.Endpoint, RegistrationID: res.RegistrationID,
		AssignedHub: res.AssignedHub, DeviceID: res.DeviceID, Substatus: res.Substatus,
		AssignedAt: res.AssignedAt, TPM: s.TPM.URI, AuthKeyHandle: uint32(tpmConfig(s).AuthKeyHandle),
	}
	if err := assignment.Save(s.State, a); err != nil {
		return nil, fmt.Errorf("registered, but could not save the assignment: %w", err)
	}
	return res, nil
}

// registrationID is the one configured, else the one the EK gives.
func registrationID(s *settings.Settings, id *tpm.Identity) string {
	if s.DPS.RegistrationID != "" {
		return s.DPS.RegistrationID
	}
	return id.RegistrationID
}

// checkWritable makes path's folder (0700) when missing and checks that a
// file can be created in it.
func checkWritable(path string) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("state folder: %w (run as root, or choose another with --state)", err)
	}
	f, err := os.CreateTemp(dir, ".probe*")
	if err != nil {
		return fmt.Errorf("state folder: %w (run as root, or choose another with --state)", err)
	}
	f.Close()
	return os.Remove(f.Name())
}
