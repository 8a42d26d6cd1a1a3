package lab

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"time"

	"github.com/edgetpm/edgetpm/internal/atomicfile"

	"github.com/edgetpm/edgetpm/internal/emulator/pki"
)

// provision runs "edge-provisioner provision" against the lab, as an
// operator runs it on a device: TPM attestation with the DPS emulator,
// config.toml written in the state folder, and the relay image
// side-loaded into containerd. The runtime stand-in applies config.toml
// itself, and is started after, so the provisioner neither applies nor
// waits for modules.
func (l *Lab) provision(ctx context.Context, b binaries, tpmURI string, d *DPSEmulator) error {
	start := time.Now()
	// An empty settings file, so that the host's own
	// /etc/edge-provisioner/config.toml has no say.
	settings := l.path("provisioner.toml")
	if err := os.WriteFile(settings, nil, 0o600); err != nil {
		return err
	}
	args := []string{"provision", "--json",
		"--config", settings,
		"--tpm", tpmURI,
		"--id-scope", d.IDScope(),
		"--endpoint", d.Endpoint,
		"--ca-file", l.path(pki.CertFile),
		"--aziot-config", l.path("config.toml"),
		"--state", l.path("provisioner", "assignment.json"),
		"--hostname", GatewayHostName(),
		"--no-apply", "--no-wait",
	}
	if b.archive != "" {
		args = append(args, "--image", b.archive,
			"--containerd-address", l.cfg.Containerd,
			"--containerd-namespace", l.cfg.Namespace,
			"--docker-socket", "")
	}
	logFile, err := os.OpenFile(l.path("logs", "provision.log"), os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	defer logFile.Close()
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, b.provisioner, args...)
	cmd.Stdout = &stdout
	cmd.Stderr = io.MultiWriter(logFile, &stderr)
	cmd.Env = environWithout("EDGE_")
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("edge-provisioner provision: %v\n%s", err, indent(stderr.String()))
	}
	var report struct {
		RegistrationID string `json:"registrationId"`
		AssignedHub    string `json:"assignedHub"`
		DeviceID       string `json:"deviceId"`
		Images         []struct {
			Images []struct {
				Name string `json:"name"`
			} `json:"images"`
		} `json:"images"`
	}
	if err := json.Unmarshal(stdout.Bytes(), &report); err != nil {
		return fmt.Errorf("edge-provisioner provision: its report: %w", err)
	}
	if report.RegistrationID != l.identity.RegistrationID || report.DeviceID == "" {
		return fmt.Errorf("edge-provisioner provision registered %q as device %q, want %s", report.RegistrationID, report.DeviceID, l.identity.RegistrationID)
	}
	l.identity.AssignedHub, l.identity.DeviceID = report.AssignedHub, report.DeviceID
	if err := atomicfile.WriteFile(l.path(DeviceFile), []byte(report.DeviceID+"\n"), 0o644); err != nil {
		return err
	}
	l.printf("provision", "edge-provisioner provision: device %s assigned to %s by TPM attestation, %s written, in %v",
		report.DeviceID, report.AssignedHub, l.path("config.toml"), since(start))
	if b.archive != "" {
		if len(report.Images) != 1 || len(report.Images[0].Images) != 1 {
			return fmt.Errorf("edge-provisioner provision loaded %d archives, want the relay's", len(report.Images))
		}
		l.relayImage = report.Images[0].Images[0].Name
		l.printf("provision", "%s side-loaded into containerd %s, namespace %s", l.relayImage, l.cfg.Containerd, l.cfg.Namespace)
	}
	return nil
}

// environWithout is this process's environment without the variables
// whose names start with prefix.
func environWithout(prefix string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, prefix) {
			env = append(env, kv)
		}
	}
	return env
}

// indent indents text for an error message.
func indent(text string) string {
	text = strings.TrimSpace(text)
	return "  " + strings.ReplaceAll(text, "\n", "\n  ")
}
