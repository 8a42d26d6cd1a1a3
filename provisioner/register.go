package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/rs/zerolog"

	"github.com/edgetpm/edgetpm/internal/assignment"
	"github.com/edgetpm/edgetpm/provisioner/dps"
	"github.com/edgetpm/edgetpm/provisioner/tpm"
)

func runRegister(ctx context.Context, args []string, stdout, stderr io.Writer, getenv env) error {
	fs := newFlagSet("register", "register --id-scope SCOPE [--endpoint URL] [--registration-id ID] [--payload FILE] [--ca-file PEM] [--tpm URI] [--json]")
	var tf tpmFlags
	tf.register(fs)
	scope := fs.String("id-scope", "", "DPS ID `SCOPE`, e.g. 0ne00000000")
	endpoint := fs.String("endpoint", dps.GlobalEndpoint, "DPS device endpoint `URL`")
	regID := fs.String("registration-id", "", "registration `ID` enrolled in DPS (default: derived from the endorsement key)")
	payloadFile := fs.String("payload", "", "send the JSON in `FILE` as the registration payload (for custom allocation)")
	caFile := fs.String("ca-file", "", "also trust the CA certificates in `PEM` (private endpoints, the local lab)")
	timeout := fs.Duration("timeout", dps.DefaultTimeout, "give up after this long, retries and polls included")
	statePath := stateFlag(fs, getenv)
	asJSON := fs.Bool("json", false, "print the result as JSON")
	if help, err := parse(fs, args, stdout); help || err != nil {
		return err
	}
	if *scope == "" {
		return usagef("register needs --id-scope")
	}
	if *timeout <= 0 {
		return usagef("--timeout must be positive")
	}
	var payload json.RawMessage
	if *payloadFile != "" {
		b, err := os.ReadFile(*payloadFile)
		if err != nil {
			return fmt.Errorf("read payload: %w", err)
		}
		if !json.Valid(b) {
			return fmt.Errorf("payload %s is not JSON", *payloadFile)
		}
		payload = b
	}
	roots, err := dps.TrustFile(*caFile)
	if err != nil {
		return err
	}
	uri, cfg, err := tf.resolve(getenv)
	if err != nil {
		return err
	}
	// Fail on an unwritable state folder before touching DPS or the TPM.
	if err := checkWritable(*statePath); err != nil {
		return err
	}
	t, err := tpm.Open(uri, cfg)
	if err != nil {
		return err
	}
	defer t.Close()
	id, err := t.Identity(ctx)
	if err != nil {
		return err
	}
	if *regID == "" {
		*regID = id.RegistrationID
	}
	log := zerolog.New(zerolog.ConsoleWriter{Out: stderr, TimeFormat: time.TimeOnly, NoColor: true}).With().Timestamp().Logger()
	c := &dps.Client{IDScope: *scope, Endpoint: *endpoint, HTTP: dps.NewHTTPClient(roots), Timeout: *timeout, Log: log}
	log.Info().Str("registration_id", *regID).Str("endpoint", *endpoint).Msg("registering")
	res, err := c.Register(ctx, t, dps.Request{
		RegistrationID: *regID,
		EndorsementKey: id.EndorsementKey,
		StorageRootKey: id.StorageRootKey,
		Payload:        payload,
	})
	if err != nil {
		return err
	}
	a := &assignment.Assignment{
		IDScope: *scope, Endpoint: *endpoint, RegistrationID: res.RegistrationID,
		AssignedHub: res.AssignedHub, DeviceID: res.DeviceID, Substatus: res.Substatus,
		AssignedAt: res.AssignedAt, TPM: uri, AuthKeyHandle: uint32(cfg.AuthKeyHandle),
	}
	if err := assignment.Save(*statePath, a); err != nil {
		return fmt.Errorf("registered, but could not save the assignment: %w", err)
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(struct {
			*dps.Result
			State string `json:"state"`
		}{res, *statePath})
	}
	fmt.Fprintf(stdout, "Assigned hub:     %s\nDevice ID:        %s\nStatus:           %s (%s)\nRegistration ID:  %s\nSaved to:         %s\n",
		res.AssignedHub, res.DeviceID, res.Status, res.Substatus, res.RegistrationID, *statePath)
	fmt.Fprintf(stdout, "Took %v: TPM %v, HTTP %v in %d requests, waiting %v over %d polls\n",
		(res.Timing.TPM + res.Timing.HTTP + res.Timing.Wait).Round(time.Millisecond), res.Timing.TPM.Round(time.Millisecond), res.Timing.HTTP.Round(time.Millisecond),
		res.Timing.Requests, res.Timing.Wait.Round(time.Millisecond), res.Timing.Polls)
	return nil
}

// stateFlag registers --state, where the DPS assignment is kept.
func stateFlag(fs *flag.FlagSet, getenv env) *string {
	def := getenv("EDGE_PROVISIONER_STATE")
	if def == "" {
		def = assignment.DefaultPath
	}
	return fs.String("state", def, "the DPS assignment `FILE` (default $EDGE_PROVISIONER_STATE, else "+assignment.DefaultPath+")")
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
