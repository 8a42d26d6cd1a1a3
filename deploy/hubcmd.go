package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/pelletier/go-toml/v2"

	"github.com/edgetpm/edgetpm/deploy/lab"
	"github.com/edgetpm/edgetpm/deploy/manifest"
	"github.com/edgetpm/edgetpm/deploy/rollout"
	"github.com/edgetpm/edgetpm/internal/cli"
	"github.com/edgetpm/edgetpm/internal/hubservice"
	"github.com/edgetpm/edgetpm/internal/sas"
	"github.com/edgetpm/edgetpm/internal/tlsconfig"
)

// envConnectionString holds the IoT Hub service connection string: never
// a flag, so that it stays out of process lists and shell history.
const envConnectionString = "IOTHUB_CONNECTION_STRING"

// hubFlags are how a command reaches IoT Hub's service API.
type hubFlags struct {
	connFile, caFile, endpoint, lab string
}

func (h *hubFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&h.lab, "lab", "", "use the running lab hub of state `folder` (its connection string, CA and service URL)")
	fs.StringVar(&h.connFile, "connection-string-file", "", "read the IoT Hub service connection string from `FILE` (default: $"+envConnectionString+")")
	fs.StringVar(&h.caFile, "ca-file", "", "trust the CA certificates in `PEM` too (the lab's hub)")
	fs.StringVar(&h.endpoint, "endpoint", "", "service API base `URL` (default: https:// and the connection string's HostName)")
}

// client builds the service client: the connection string from the file
// or the environment, TLS verified against the system's roots and --ca-file.
func (h *hubFlags) client(getenv func(string) string) (*hubservice.Client, error) {
	if h.lab != "" {
		return lab.ServiceClient(h.lab)
	}
	cs := getenv(envConnectionString)
	if h.connFile != "" {
		b, err := os.ReadFile(h.connFile)
		if err != nil {
			return nil, err
		}
		cs = string(b)
	}
	if strings.TrimSpace(cs) == "" {
		return nil, cli.Usagef("no IoT Hub service connection string: set $%s or --connection-string-file", envConnectionString)
	}
	conn, err := sas.ParsePolicy(cs)
	if err != nil {
		return nil, err
	}
	roots, err := tlsconfig.TrustFile(h.caFile)
	if err != nil {
		return nil, err
	}
	return &hubservice.Client{Conn: conn, Endpoint: strings.TrimSuffix(h.endpoint, "/"), HTTP: tlsconfig.HTTPClient(roots, time.Minute)}, nil
}

// planFile is a rollout plan as written in TOML.
type planFile struct {
	ID         string            `toml:"id"`
	Deployment string            `toml:"deployment"` // a rendered deployment JSON, relative to the plan
	Priority   int               `toml:"priority"`
	Labels     map[string]string `toml:"labels"`
	Poll       string            `toml:"poll"`
	Waves      []struct {
		Name        string  `toml:"name"`
		Target      string  `toml:"target"`
		MinSuccess  float64 `toml:"min_success"`
		MaxFailures int64   `toml:"max_failures"`
		Timeout     string  `toml:"timeout"`
	} `toml:"waves"`
}

// loadPlan reads a plan and the deployment it names.
func loadPlan(path string) (rollout.Plan, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return rollout.Plan{}, err
	}
	var f planFile
	dec := toml.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&f); err != nil {
		var sm *toml.StrictMissingError
		if errors.As(err, &sm) && len(sm.Errors) > 0 {
			de := sm.Errors[0]
			row, col := de.Position()
			return rollout.Plan{}, fmt.Errorf("%s:%d:%d: unknown key %q", path, row, col, strings.Join(de.Key(), "."))
		}
		var de *toml.DecodeError
		if errors.As(err, &de) {
			row, col := de.Position()
			return rollout.Plan{}, fmt.Errorf("%s:%d:%d: %s", path, row, col, de.Error())
		}
		return rollout.Plan{}, fmt.Errorf("%s: %w", path, err)
	}
	p := rollout.Plan{ID: f.ID, Priority: f.Priority, Labels: f.Labels}
	if f.Poll != "" {
		if p.Poll, err = time.ParseDuration(f.Poll); err != nil {
			return p, fmt.Errorf("%s: poll: %w", path, err)
		}
	}
	for _, w := range f.Waves {
		wave := rollout.Wave{Name: w.Name, Target: w.Target, MinSuccess: w.MinSuccess, MaxFailures: w.MaxFailures}
		if w.Timeout != "" {
			if wave.Timeout, err = time.ParseDuration(w.Timeout); err != nil {
				return p, fmt.Errorf("%s: wave %s: timeout: %w", path, w.Name, err)
			}
		}
		p.Waves = append(p.Waves, wave)
	}
	if f.Deployment == "" {
		return p, fmt.Errorf("%s: no deployment file", path)
	}
	dep := f.Deployment
	if !filepath.IsAbs(dep) {
		dep = filepath.Join(filepath.Dir(path), dep)
	}
	if p.Content, err = os.ReadFile(dep); err != nil {
		return p, err
	}
	if err := manifest.Validate(p.Content); err != nil {
		return p, fmt.Errorf("%s: %w", dep, err)
	}
	return p, p.Validate()
}

// hubCommand parses the flags common to the rollout commands.
func hubCommand(name, summary string, args []string, stdout io.Writer, extra func(*flag.FlagSet)) (*flag.FlagSet, *hubFlags, error) {
	fs := flag.NewFlagSet("edge-deploy "+name, flag.ContinueOnError)
	h := &hubFlags{}
	h.register(fs)
	extra(fs)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: edge-deploy %s [flags]\n\n%s\n\n", name, summary)
		fs.PrintDefaults()
	}
	return fs, h, cli.Parse(fs, args, stdout)
}

// applyCmd sets one edge device's modules from a deployment
// (applyConfigurationContent).
func applyCmd(ctx context.Context, args []string, stdout, _ io.Writer, getenv func(string) string) error {
	var device, file string
	_, h, err := hubCommand("apply", "Apply a deployment to one IoT Edge device.", args, stdout, func(fs *flag.FlagSet) {
		fs.StringVar(&device, "device", "", "the edge device's `ID`")
		fs.StringVar(&file, "deployment", "", "the deployment `FILE` (JSON with modulesContent)")
	})
	if err != nil {
		return err
	}
	if device == "" || file == "" {
		return cli.Usagef("apply: want --device and --deployment")
	}
	content, err := os.ReadFile(file)
	if err != nil {
		return err
	}
	if err := manifest.Validate(content); err != nil {
		return fmt.Errorf("%s: %w", file, err)
	}
	if err := standard(content); err != nil {
		return fmt.Errorf("%s: %w", file, err)
	}
	c, err := h.client(getenv)
	if err != nil {
		return err
	}
	if err := c.ApplyConfigurationContent(ctx, device, content); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "applied %s to %s\n", file, device)
	return nil
}

// rolloutCmd runs a rollout plan.
func rolloutCmd(ctx context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string) error {
	var planPath string
	var asJSON bool
	_, h, err := hubCommand("rollout", "Roll a deployment out in waves, each gated on the health of the one before.", args, stdout, func(fs *flag.FlagSet) {
		fs.StringVar(&planPath, "plan", "", "the rollout plan `FILE` (TOML)")
		fs.BoolVar(&asJSON, "json", false, "print the final report as JSON")
	})
	if err != nil {
		return err
	}
	p, c, err := planAndClient(planPath, h, getenv)
	if err != nil {
		return err
	}
	last := map[string]string{}
	rep, err := rollout.Run(ctx, c, p, func(st rollout.WaveStatus) {
		line := waveLine(st)
		if last[st.Wave] != line {
			fmt.Fprintln(stderr, line)
			last[st.Wave] = line
		}
	})
	if rep != nil {
		printReport(stdout, rep, asJSON)
	}
	if errors.Is(err, rollout.ErrHalted) {
		// The hint goes with the error, which main prints once.
		return fmt.Errorf("%w\nto undo: edge-deploy rollback --plan %s --wave %s", err, planPath, rep.Halted)
	}
	return err
}

// statusCmd shows where a rollout stands.
func statusCmd(ctx context.Context, args []string, stdout, _ io.Writer, getenv func(string) string) error {
	var planPath string
	var asJSON bool
	_, h, err := hubCommand("status", "Show each wave of a rollout: targeted, applied, succeeded, failed.", args, stdout, func(fs *flag.FlagSet) {
		fs.StringVar(&planPath, "plan", "", "the rollout plan `FILE` (TOML)")
		fs.BoolVar(&asJSON, "json", false, "print JSON")
	})
	if err != nil {
		return err
	}
	p, c, err := planAndClient(planPath, h, getenv)
	if err != nil {
		return err
	}
	rep, err := rollout.Status(ctx, c, p)
	if err != nil {
		return err
	}
	printReport(stdout, rep, asJSON)
	return nil
}

// rollbackCmd removes a wave's configuration and those after it.
func rollbackCmd(ctx context.Context, args []string, stdout, _ io.Writer, getenv func(string) string) error {
	var planPath, wave string
	_, h, err := hubCommand("rollback", "Remove a wave's deployment and the waves after it; its devices go back to the deployment below.", args, stdout, func(fs *flag.FlagSet) {
		fs.StringVar(&planPath, "plan", "", "the rollout plan `FILE` (TOML)")
		fs.StringVar(&wave, "wave", "", "the wave `NAME` to remove, with the ones after it")
	})
	if err != nil {
		return err
	}
	if wave == "" {
		return cli.Usagef("rollback: want --wave")
	}
	p, c, err := planAndClient(planPath, h, getenv)
	if err != nil {
		return err
	}
	deleted, err := rollout.Rollback(ctx, c, p, wave)
	for _, id := range deleted {
		fmt.Fprintf(stdout, "deleted configuration %s\n", id)
	}
	if err == nil && len(deleted) == 0 {
		fmt.Fprintln(stdout, "nothing to remove")
	}
	return err
}

func planAndClient(path string, h *hubFlags, getenv func(string) string) (rollout.Plan, *hubservice.Client, error) {
	if path == "" {
		return rollout.Plan{}, nil, cli.Usagef("want --plan")
	}
	p, err := loadPlan(path)
	if err != nil {
		return p, nil, err
	}
	c, err := h.client(getenv)
	return p, c, err
}

func waveLine(st rollout.WaveStatus) string {
	s := fmt.Sprintf("wave %-12s %-11s targeted %d, applied %d, succeeded %d, failed %d", st.Wave, st.Verdict, st.Targeted, st.Applied, st.Succeeded, st.Failed)
	if st.Reason != "" {
		s += ": " + st.Reason
	}
	return s
}

func printReport(w io.Writer, rep *rollout.Report, asJSON bool) {
	if asJSON {
		b, _ := json.MarshalIndent(rep, "", "  ")
		fmt.Fprintf(w, "%s\n", b)
		return
	}
	fmt.Fprintf(w, "rollout %s\n", rep.Rollout)
	for _, st := range rep.Waves {
		fmt.Fprintln(w, "  "+waveLine(st))
	}
	if rep.Halted != "" {
		fmt.Fprintf(w, "halted at wave %s\n", rep.Halted)
	}
}

// standard checks what applyConfigurationContent takes: {"modulesContent":
// ...} of a standard deployment, each module as a whole "properties.desired"
// (a layered deployment needs a base one under it, docs/edge-protocol.md#deployments).
func standard(doc []byte) error {
	var d struct {
		ModulesContent map[string]map[string]json.RawMessage `json:"modulesContent"`
	}
	if err := json.Unmarshal(doc, &d); err != nil || d.ModulesContent == nil {
		return errors.New(`apply takes {"modulesContent": {...}}, not a whole configuration`)
	}
	for module, sections := range d.ModulesContent {
		for key := range sections {
			if key != "properties.desired" {
				return fmt.Errorf("module %s: %q: apply takes a standard deployment; roll a layered one out with rollout", module, key)
			}
		}
	}
	if _, ok := d.ModulesContent["$edgeAgent"]["properties.desired"]; !ok {
		return errors.New("apply takes a standard deployment, with $edgeAgent's properties.desired")
	}
	return nil
}
