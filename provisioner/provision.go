package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/rs/zerolog"

	"github.com/edgetpm/edgetpm/internal/assignment"
	"github.com/edgetpm/edgetpm/internal/cli"
	"github.com/edgetpm/edgetpm/provisioner/childenv"
	"github.com/edgetpm/edgetpm/provisioner/containerd"
	"github.com/edgetpm/edgetpm/provisioner/edgeconfig"
	"github.com/edgetpm/edgetpm/provisioner/settings"
	"github.com/edgetpm/edgetpm/provisioner/tpm"
)

const provisionSynopsis = `provision [--config FILE] [flags] [--json]

Runs every step: TPM ready, identity, DPS registration, config.toml, apply,
side-load images, wait for runtime health. A second run changes nothing.
The exit code tells which step failed: 3 TPM, 4 DPS registration,
5 config.toml, 6 apply, 7 images, 8 runtime health (2 usage, 1 other).`

// provisionReport is provision's --json output.
type provisionReport struct {
	RegistrationID string                   `json:"registrationId"`
	AssignedHub    string                   `json:"assignedHub,omitempty"`
	DeviceID       string                   `json:"deviceId,omitempty"`
	Config         string                   `json:"config"`
	ConfigChanged  bool                     `json:"configChanged"`
	Backup         string                   `json:"backup,omitempty"`
	Images         []*containerd.LoadResult `json:"images"`
	Containers     []containerd.Container   `json:"containers"`
	Changed        bool                     `json:"changed"`
	Steps          []step                   `json:"steps"`
}

func runProvision(ctx context.Context, args []string, stdout, stderr io.Writer, getenv env) error {
	fs := newFlagSet("provision", provisionSynopsis)
	l := settings.NewLoader(fs, settings.TPMGroup|settings.DPSGroup|settings.AziotGroup|settings.ContainerdGroup|settings.ProvisionGroup|settings.StateGroup)
	force := fs.Bool("force", false, "replace another provisioning source (manual, X.509) in config.toml")
	dryRun := fs.Bool("dry-run", false, "print the change to config.toml and change nothing")
	reregister := fs.Bool("reregister", false, "register with DPS even when this identity is registered already")
	asJSON := fs.Bool("json", false, "print a JSON report on stdout")
	s, help, err := loadSettings(fs, l, args, stdout, getenv)
	if help || err != nil {
		return err
	}
	if s.DPS.IDScope == "" {
		return cli.Usagef("provision needs --id-scope (or dps.id_scope in the settings file)")
	}
	p := &provisioner{s: s, log: progressLog(stderr), stdout: stdout, stderr: stderr, dryRun: *dryRun, force: *force, reregister: *reregister, underSystemd: getenv("INVOCATION_ID") != ""}
	p.steps = steps{out: stderr, total: 7}
	start := time.Now()
	err = p.run(ctx)
	p.report.Steps, p.report.Changed = p.steps.done, p.steps.changed()
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if jerr := enc.Encode(p.report); jerr != nil && err == nil {
			err = jerr
		}
	}
	if err != nil {
		return err
	}
	summary := "nothing changed"
	if p.report.Changed {
		summary = "changes made"
	}
	if *dryRun {
		summary = "dry run, nothing changed"
	}
	fmt.Fprintf(stderr, "provisioned in %v: %s\n", roundDuration(time.Since(start)), summary)
	return nil
}

// provisioner holds one run of provision.
type provisioner struct {
	s                         *settings.Settings
	log                       zerolog.Logger
	stdout, stderr            io.Writer
	dryRun, force, reregister bool
	// underSystemd: run by a systemd unit, which sets $INVOCATION_ID.
	underSystemd bool
	steps        steps
	report       provisionReport

	tpm    *tpm.TPM
	id     *tpm.Identity
	status *tpm.Status
	ctd    *containerd.Client
}

func (p *provisioner) run(ctx context.Context) error {
	defer func() {
		if p.tpm != nil {
			p.tpm.Close()
		}
		if p.ctd != nil {
			p.ctd.Close()
		}
	}()
	for _, st := range []struct {
		name string
		code int
		fn   func(context.Context) (string, string, error)
	}{
		{"TPM ready", exitTPM, p.tpmReady},
		{"identity", exitTPM, p.identity},
		{"DPS", exitRegister, p.register},
		{"config.toml", exitConfig, p.config},
		{"apply", exitApply, p.apply},
		{"images", exitImages, p.images},
		{"runtime health", exitHealth, p.health},
	} {
		if err := p.steps.run(st.name, st.code, func() (string, string, error) { return st.fn(ctx) }); err != nil {
			return err
		}
	}
	return nil
}

func (p *provisioner) tpmReady(ctx context.Context) (string, string, error) {
	t, err := openTPM(p.s)
	if err != nil {
		return "", "", err
	}
	p.tpm = t
	before, err := t.Status(ctx)
	if err != nil {
		return "", "", err
	}
	if p.id, err = t.Identity(ctx); err != nil {
		return "", "", err
	}
	if p.status, err = t.Status(ctx); err != nil {
		return "", "", err
	}
	if before.EndorsementKey && before.StorageRootKey {
		return stepUnchanged, fmt.Sprintf("%s (%s): EK and SRK persisted", p.s.TPM.URI, p.status.Manufacturer), nil
	}
	return stepChanged, fmt.Sprintf("%s (%s): created and persisted the EK and SRK", p.s.TPM.URI, p.status.Manufacturer), nil
}

func (p *provisioner) identity(context.Context) (string, string, error) {
	p.report.RegistrationID = registrationID(p.s, p.id)
	detail := "registration ID " + p.report.RegistrationID
	if p.id.EKCertificate != nil {
		detail += ", EK certificate from " + p.id.EKCertificate.Issuer.String()
	}
	for _, err := range p.id.CertificateErrors {
		p.log.Warn().Err(err).Msg("certificate in TPM NV left out")
	}
	return stepUnchanged, detail, nil
}

func (p *provisioner) register(ctx context.Context) (string, string, error) {
	switch {
	case !p.s.DPS.Register:
		return stepSkipped, "left to the IoT Edge runtime (--skip-register)", nil
	case p.dryRun:
		return stepSkipped, "dry run", nil
	}
	if a, ok := p.registered(); ok && !p.reregister {
		p.report.AssignedHub, p.report.DeviceID = a.AssignedHub, a.DeviceID
		return stepUnchanged, fmt.Sprintf("assigned to %s as %s on %s; the hub key is in the TPM (--reregister checks again)",
			a.AssignedHub, a.DeviceID, a.AssignedAt.Format(time.DateOnly)), nil
	}
	res, err := register(ctx, p.s, p.tpm, p.id, p.log)
	if err != nil {
		return "", "", err
	}
	p.report.AssignedHub, p.report.DeviceID = res.AssignedHub, res.DeviceID
	return stepChanged, fmt.Sprintf("assigned to %s as %s (%s)", res.AssignedHub, res.DeviceID, res.Substatus), nil
}

// registered returns the saved assignment when it is for this very
// identity, scope and TPM slot and the hub key is in the TPM.
func (p *provisioner) registered() (*assignment.Assignment, bool) {
	a, err := assignment.Load(p.s.State)
	if err != nil || !p.status.AuthKey {
		return nil, false
	}
	same := a.IDScope == p.s.DPS.IDScope && a.Endpoint == p.s.DPS.Endpoint && a.RegistrationID == p.report.RegistrationID &&
		a.TPM == p.s.TPM.URI && a.AuthKeyHandle == p.status.AuthKeyHandle
	return a, same
}

func (p *provisioner) config(context.Context) (string, string, error) {
	path := p.s.Aziot.Config
	p.report.Config = path
	if err := edgeconfig.CheckFolder(path); err != nil {
		return "", "", err
	}
	tcti, err := p.s.TPM.AziotTCTI()
	if err != nil {
		return "", "", err
	}
	doc, err := edgeconfig.Load(path)
	if err != nil {
		return "", "", err
	}
	old := doc.Bytes()
	if !doc.Exists() {
		old = nil // the diff of a dry run comes from /dev/null
	}
	err = doc.SetDPS(edgeconfig.DPS{
		Hostname:               p.s.Aziot.Hostname,
		AutoReprovisioningMode: p.s.Aziot.AutoReprovisioningMode,
		GlobalEndpoint:         p.s.DPS.Endpoint,
		IDScope:                p.s.DPS.IDScope,
		RegistrationID:         p.report.RegistrationID,
		PayloadURI:             fileURI(p.s.DPS.PayloadFile),
		TCTI:                   tcti,
		AuthKeyIndex:           p.s.TPM.AuthKeyIndex,
		EndorsementAuth:        string(p.s.TPM.EndorsementAuth),
		OwnerAuth:              string(p.s.TPM.OwnerAuth),
	}, p.force)
	if err != nil {
		return "", "", err
	}
	if _, err := doc.EnsureAgent(p.s.Aziot.AgentImage); err != nil {
		return "", "", err
	}
	if p.dryRun {
		diff := edgeconfig.Diff(path, old, doc.Bytes())
		if diff == "" {
			return stepUnchanged, path + " is up to date", nil
		}
		fmt.Fprint(p.stdout, diff)
		return stepSkipped, "dry run: the change to " + path + " is above", nil
	}
	backup, changed, err := edgeconfig.Write(path, doc.Bytes(), time.Now())
	if err != nil {
		return "", "", err
	}
	if !changed {
		return stepUnchanged, path + " is up to date", nil
	}
	p.report.ConfigChanged, p.report.Backup = true, backup
	if backup == "" {
		return stepChanged, "wrote " + path, nil
	}
	return stepChanged, fmt.Sprintf("wrote %s, the previous one kept as %s", path, backup), nil
}

// fileURI turns the payload file into the file:// URI aziot wants.
func fileURI(path string) string {
	if path == "" {
		return ""
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		abs = path
	}
	return "file://" + abs
}

func (p *provisioner) apply(ctx context.Context) (string, string, error) {
	switch {
	case !p.s.Aziot.Apply:
		return stepSkipped, "--no-apply", nil
	case p.dryRun:
		return stepSkipped, "dry run", nil
	case !p.report.ConfigChanged && edgeconfig.Applied(p.appliedRecord(), p.s.Aziot.Config):
		return stepUnchanged, "config.toml is applied already", nil
	}
	if p.underSystemd {
		return p.queueApply(ctx)
	}
	tool, err := edgeconfig.Apply(ctx, p.s.Aziot.Config, p.stderr)
	if errors.Is(err, edgeconfig.ErrNoApplyTool) {
		return "", "", fmt.Errorf("%w: install IoT Edge (aziot-edge) or the identity service (aziot-identity-service), or pass --no-apply", err)
	}
	if err != nil {
		return "", "", err
	}
	if err := edgeconfig.RecordApplied(p.appliedRecord(), p.s.Aziot.Config, tool, false, time.Now()); err != nil {
		return "", "", err
	}
	return stepChanged, tool + " config apply", nil
}

// queueApply hands 'config apply' to a transient systemd unit. Run by
// edge-provisioner.service, which is ordered before the aziot services,
// a blocking apply would wait forever: the restarts it asks systemd for
// wait for this unit to finish starting.
func (p *provisioner) queueApply(ctx context.Context) (string, string, error) {
	tool, argv, err := edgeconfig.ApplyCommand(p.s.Aziot.Config)
	if err != nil {
		return "", "", err
	}
	args := append([]string{"--no-block", "--collect", "--unit=edge-provisioner-apply",
		"--description=Apply " + p.s.Aziot.Config + " (edge-provisioner)"}, argv...)
	cmd := exec.CommandContext(ctx, "systemd-run", args...)
	cmd.Env = childenv.Environ()
	cmd.Stdout, cmd.Stderr = p.stderr, p.stderr
	if err := cmd.Run(); err != nil {
		return "", "", fmt.Errorf("queue %s config apply with systemd-run: %w", tool, err)
	}
	if err := edgeconfig.RecordApplied(p.appliedRecord(), p.s.Aziot.Config, tool, true, time.Now()); err != nil {
		return "", "", err
	}
	return stepChanged, tool + " config apply, queued as edge-provisioner-apply.service", nil
}

// appliedRecord is where provision records what it applied: in its own
// state folder, beside the assignment (edgeconfig.AppliedRecord).
func (p *provisioner) appliedRecord() string {
	return filepath.Join(filepath.Dir(p.s.State), "applied.json")
}

// containerd connects once, for images and health.
func (p *provisioner) containerd(ctx context.Context) (*containerd.Client, error) {
	if p.ctd != nil {
		return p.ctd, nil
	}
	c, err := newContainerd(ctx, p.s, p.log)
	p.ctd = c
	return c, err
}

func newContainerd(ctx context.Context, s *settings.Settings, log zerolog.Logger) (*containerd.Client, error) {
	return containerd.New(ctx, s.Images.ContainerdAddress,
		containerd.WithNamespace(s.Images.ContainerdNamespace),
		containerd.WithDockerSocket(s.Images.DockerSocket),
		containerd.WithLogger(log))
}

func (p *provisioner) images(ctx context.Context) (string, string, error) {
	files := p.s.Images.Files
	switch {
	case len(files) == 0:
		return stepSkipped, "none configured (--image FILE)", nil
	case p.dryRun:
		return stepSkipped, "dry run: would load " + strings.Join(files, ", "), nil
	}
	c, err := p.containerd(ctx)
	if err != nil {
		return "", "", err
	}
	status := stepUnchanged
	var lines []string
	for _, f := range files {
		res, err := c.Load(ctx, f)
		if err != nil {
			return "", "", err
		}
		p.report.Images = append(p.report.Images, res)
		for _, img := range res.Images {
			state := "loaded"
			if img.Skipped {
				state = "present"
			} else {
				status = stepChanged
			}
			lines = append(lines, fmt.Sprintf("%s %s (%s)", img.Name, state, res.Via))
		}
	}
	return status, strings.Join(lines, ", "), nil
}

func (p *provisioner) health(ctx context.Context) (string, string, error) {
	switch {
	case !p.s.Health.Wait:
		return stepSkipped, "--no-wait", nil
	case p.dryRun:
		return stepSkipped, "dry run", nil
	}
	c, err := p.containerd(ctx)
	if err != nil {
		return "", "", err
	}
	ctx, cancel := context.WithTimeout(ctx, time.Duration(p.s.Health.Timeout))
	defer cancel()
	cs, err := c.WaitRunning(ctx, p.s.Health.Modules, time.Second)
	p.report.Containers = cs
	if err != nil {
		return "", "", fmt.Errorf("%w; %s", err, runtimeRemedy)
	}
	return stepUnchanged, strings.Join(p.s.Health.Modules, ", ") + " running", nil
}
