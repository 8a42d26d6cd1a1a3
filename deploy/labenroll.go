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

	c, err := lab.DPSServiceClient(*dir)
	if err != nil {
		return err
	}
	if err := lab.Enroll(ctx, c, id.RegistrationID, *deviceID, ek, *edge); err != nil {
		return err
	}
	scope, err := os.ReadFile(filepath.Join(*dir, lab.IDScopeFile))
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "enrolled %s in id scope %s at %s\n", id.RegistrationID, strings.TrimSpace(string(scope)), c.Endpoint)
	return nil
}
