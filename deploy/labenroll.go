package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/edgetpm/edgetpm/deploy/lab"
	"github.com/edgetpm/edgetpm/internal/cli"
	"github.com/edgetpm/edgetpm/internal/dpsservice"
	"github.com/edgetpm/edgetpm/internal/emulator/pki"
	"github.com/edgetpm/edgetpm/internal/sas"
	"github.com/edgetpm/edgetpm/internal/tlsconfig"
	"github.com/edgetpm/edgetpm/provisioner/dps"
)

// labEnroll creates or replaces the individual TPM enrollment of a device
// in the running lab, through the DPS service API as an operator's tooling
// would, with the identity 'edge-provisioner identity --json' printed.
func labEnroll(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("edge-deploy lab enroll", flag.ContinueOnError)
	dir := fs.String("state-dir", "./lab-state", "the lab's state `folder` (endpoint, CA and service connection string)")
	identity := fs.String("identity", "-", "`FILE` with the output of 'edge-provisioner identity --json'; - for stdin")
	deviceID := fs.String("device-id", "", "IoT hub device `ID` (default: the registration ID)")
	edge := fs.Bool("edge", true, "enroll the device as an IoT Edge device")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: edge-provisioner identity --json | edge-deploy lab enroll [flags]\n\nEnroll a TPM in the running lab's DPS.\n\n")
		fs.PrintDefaults()
	}
	if err := cli.Parse(fs, args, stdout); err != nil {
		return err
	}
	var in io.Reader = stdin
	if *identity != "-" {
		f, err := os.Open(*identity)
		if err != nil {
			return err
		}
		defer f.Close()
		in = f
	}
	var id struct {
		RegistrationID string `json:"registrationId"`
		EndorsementKey string `json:"endorsementKey"`
	}
	if err := json.NewDecoder(io.LimitReader(in, 1<<20)).Decode(&id); err != nil {
		return fmt.Errorf("read identity: %w", err)
	}
	ek, err := base64.StdEncoding.DecodeString(id.EndorsementKey)
	if err != nil || id.RegistrationID == "" || len(ek) == 0 {
		return fmt.Errorf("identity holds no registrationId and endorsementKey: give the output of 'edge-provisioner identity --json'")
	}

	read := func(name string) (string, error) {
		b, err := os.ReadFile(filepath.Join(*dir, name))
		if err != nil {
			return "", fmt.Errorf("read the lab's %s (is 'edge-deploy lab dps --state-dir %s' running?): %w", name, *dir, err)
		}
		return strings.TrimSpace(string(b)), nil
	}
	endpoint, err := read(lab.DPSEndpointFile)
	if err != nil {
		return err
	}
	cs, err := read(lab.DPSConnFile)
	if err != nil {
		return err
	}
	conn, err := sas.ParsePolicy(cs)
	if err != nil {
		return err
	}
	roots, err := tlsconfig.TrustFile(filepath.Join(*dir, pki.CertFile))
	if err != nil {
		return err
	}
	c := &dpsservice.Client{Conn: conn, Endpoint: endpoint, HTTP: dps.NewHTTPClient(roots)}
	e, err := c.PutEnrollment(ctx, dpsservice.Enrollment{
		RegistrationID: id.RegistrationID,
		DeviceID:       *deviceID,
		Attestation:    dpsservice.Attestation{Type: "tpm", TPM: &dpsservice.TPMAttestation{EndorsementKey: ek}},
		Capabilities:   &dpsservice.Capabilities{IoTEdge: *edge},
	}, "")
	if err != nil {
		return err
	}
	scope, err := read(lab.IDScopeFile)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "enrolled %s in id scope %s at %s\n", e.RegistrationID, scope, endpoint)
	return nil
}
