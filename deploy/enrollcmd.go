package main

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/edgetpm/edgetpm/deploy/enroll"
	"github.com/edgetpm/edgetpm/deploy/lab"
	"github.com/edgetpm/edgetpm/internal/cli"
	"github.com/edgetpm/edgetpm/internal/dpsservice"
	"github.com/edgetpm/edgetpm/internal/ekcert"
	"github.com/edgetpm/edgetpm/internal/sas"
	"github.com/edgetpm/edgetpm/internal/tlsconfig"
)

// envDPSConnectionString holds the DPS service connection string: never a
// flag, so that it stays out of process lists and shell history.
const envDPSConnectionString = "DPS_CONNECTION_STRING"

// dpsFlags are how a command reaches DPS's service API.
type dpsFlags struct {
	connFile, caFile, endpoint, lab string
	opsPerMinute                    int
}

func (d *dpsFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&d.lab, "lab", "", "use the running lab DPS of state `folder` (its connection string, CA and service URL)")
	fs.StringVar(&d.connFile, "connection-string-file", "", "read the DPS service connection string from `FILE` (default: $"+envDPSConnectionString+")")
	fs.StringVar(&d.caFile, "ca-file", "", "trust the CA certificates in `PEM` too (the lab's DPS)")
	fs.StringVar(&d.endpoint, "endpoint", "", "service API base `URL`: https, the connection string's HostName or a loopback address (default: https:// and the HostName)")
	fs.IntVar(&d.opsPerMinute, "ops-per-minute", enroll.DefaultOpsPerMinute, "DPS operations a minute to stay within (1,000 per unit of an S1 instance)")
}

// client builds the service client, as hubFlags.client does for IoT Hub,
// with a Meter that paces its operations and counts 429s.
func (d *dpsFlags) client(getenv func(string) string) (*dpsservice.Client, *enroll.Meter, error) {
	m, err := enroll.NewMeter(d.opsPerMinute)
	if err != nil {
		return nil, nil, cli.Usagef("--ops-per-minute: %v", err)
	}
	if d.lab != "" {
		c, err := lab.DPSServiceClient(d.lab)
		if err != nil {
			return nil, nil, err
		}
		c.OnRetry = m.OnRetry
		return c, m, nil
	}
	cs := getenv(envDPSConnectionString)
	if d.connFile != "" {
		b, err := os.ReadFile(d.connFile)
		if err != nil {
			return nil, nil, err
		}
		cs = string(b)
	}
	if strings.TrimSpace(cs) == "" {
		return nil, nil, cli.Usagef("no DPS service connection string: set $%s or --connection-string-file", envDPSConnectionString)
	}
	conn, err := sas.ParsePolicy(cs)
	if err != nil {
		return nil, nil, err
	}
	if err := checkEndpoint(d.endpoint, conn.HostName); err != nil {
		return nil, nil, cli.Usagef("--endpoint %q: %v", d.endpoint, err)
	}
	roots, err := tlsconfig.TrustFile(d.caFile)
	if err != nil {
		return nil, nil, err
	}
	return &dpsservice.Client{Conn: conn, Endpoint: strings.TrimSuffix(d.endpoint, "/"), HTTP: tlsconfig.HTTPClient(roots, time.Minute), OnRetry: m.OnRetry}, m, nil
}

// optBool is a boolean flag that may be left unset (v nil).
type optBool struct{ v *bool }

func (b *optBool) IsBoolFlag() bool { return true }

func (b *optBool) String() string {
	if b == nil || b.v == nil {
		return ""
	}
	return strconv.FormatBool(*b.v)
}

func (b *optBool) Set(s string) error {
	v, err := strconv.ParseBool(s)
	if err != nil {
		return err
	}
	b.v = &v
	return nil
}

// checkEndpoint refuses a service endpoint the SAS token must not go to:
// each request carries a token of the connection string's policy, valid
// an hour, whose sr is its HostName. Plain HTTP would show it to the
// network, another host would get it; a loopback host is the lab or an
// emulator on this machine. Empty is https:// and the HostName.
func checkEndpoint(endpoint, hostName string) error {
	if endpoint == "" {
		return nil
	}
	u, err := url.Parse(endpoint)
	switch {
	case err != nil:
		return err
	case u.Scheme != "https":
		return errors.New("want an https:// URL: the service token never goes in clear")
	case u.User != nil:
		return errors.New("a URL with user information")
	case u.RawQuery != "" || u.Fragment != "" || u.ForceQuery:
		return errors.New("a URL with a query or fragment: give the service's base URL")
	}
	h := u.Hostname()
	if strings.EqualFold(h, hostName) || h == "localhost" {
		return nil
	}
	if ip := net.ParseIP(h); ip != nil && ip.IsLoopback() {
		return nil
	}
	return fmt.Errorf("host %q is not the connection string's HostName %q (nor a loopback address): the service token is for that DPS alone", h, hostName)
}

// listFlag collects a repeated flag.
type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(v string) error { *l = append(*l, v); return nil }

const enrollSummary = `Enroll TPM devices in DPS, one individual enrollment each: the identities
'edge-provisioner identity --json' printed (one, or JSON lines of many) or a
CSV with a header row (registrationId, endorsementKey and optional
endorsementKeyCertificate, deviceId, iotEdge, iotHubs, allocationPolicy,
provisioningStatus, reprovision, tags, desiredProperties, tag.NAME columns).
Each EK certificate must verify up to a TPM manufacturer's root. Only what
differs from DPS is written; a re-run changes nothing, and a setting no flag
or column gives (status, IoT Edge, re-provisioning, allocation, hubs) is
left as DPS holds it.

  edge-deploy enroll [--from FILE] [flags]
  edge-deploy enroll show|disable|delete [--from FILE] [flags] [REGISTRATION-ID...]

The DPS service connection string comes from $` + envDPSConnectionString + ` or
--connection-string-file, never the command line. Exit status 1 when an
identity was refused, failed or met a conflict.`

// enrollCmd runs edge-deploy enroll and its subcommands.
func enrollCmd(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer, getenv func(string) string) error {
	if len(args) > 0 {
		switch args[0] {
		case "show", "disable", "delete":
			return manageCmd(ctx, args[0], args[1:], stdin, stdout, stderr, getenv)
		}
	}
	fs := flag.NewFlagSet("edge-deploy enroll", flag.ContinueOnError)
	d := &dpsFlags{}
	d.register(fs)
	var (
		from, deviceID, allocation, status, reprovision, desiredFile string
		hubs, tags, anchors                                          listFlag
		edge                                                         optBool
		allowUnverified, dryRun, asJSON                              bool
	)
	fs.StringVar(&from, "from", "-", "identities `FILE`: JSON (lines) or CSV; - for stdin")
	fs.StringVar(&deviceID, "device-id", "", "IoT hub device `ID` of a single identity (default: the registration ID)")
	fs.Var(&edge, "edge", "enroll IoT Edge devices, or not with --edge=false (default: IoT Edge on create, left alone on update)")
	fs.Var(&hubs, "hub", "IoT hub `HOST` the devices may be assigned to (repeat; default: all linked hubs)")
	fs.StringVar(&allocation, "allocation", "", "allocation `POLICY` over the hubs: hashed, static or geoLatency (default: DPS's)")
	fs.StringVar(&status, "status", "", "provisioning `STATUS`: enabled or disabled (default: enabled on create, left alone on update)")
	fs.StringVar(&reprovision, "reprovision", "", "on re-provisioning: migrate (move the twin), reset (initial twin) or never (default: DPS's, migrate, on create; left alone on update)")
	fs.Var(&tags, "tag", "initial twin tag `NAME=VALUE` (repeat)")
	fs.StringVar(&desiredFile, "desired", "", "initial twin desired properties, a JSON object in `FILE`")
	fs.Var(&anchors, "ek-ca", "trust the TPM manufacturer CA certificates in `PEM` too (repeat)")
	fs.BoolVar(&allowUnverified, "allow-unverified", false, "enroll EKs without a verifiable certificate, marked in the report and in tag tpm.ekVerified")
	fs.BoolVar(&dryRun, "dry-run", false, "read DPS and report what would change, write nothing")
	fs.BoolVar(&asJSON, "json", false, "print the report as JSON")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: edge-deploy enroll [flags]\n\n%s\n\n", enrollSummary)
		fs.PrintDefaults()
	}
	if err := cli.Parse(fs, args, stdout); err != nil {
		return err
	}
	s := enroll.Settings{DeviceID: deviceID, IoTEdge: edge.v, IoTHubs: hubs, AllocationPolicy: allocation, ProvisioningStatus: status, Reprovision: reprovision}
	for _, t := range tags {
		name, value, ok := strings.Cut(t, "=")
		if !ok || name == "" {
			return cli.Usagef("--tag %q: want NAME=VALUE", t)
		}
		if s.Tags == nil {
			s.Tags = map[string]json.RawMessage{}
		}
		s.Tags[name], _ = json.Marshal(value)
	}
	if desiredFile != "" {
		b, err := os.ReadFile(desiredFile)
		if err != nil {
			return err
		}
		if err := json.Unmarshal(b, &s.Desired); err != nil || s.Desired == nil {
			return cli.Usagef("--desired %s: not a JSON object", desiredFile)
		}
	}
	if err := s.Validate(); err != nil {
		return cli.Usage(err)
	}
	c, m, err := d.client(getenv)
	if err != nil {
		return err
	}
	var certs []*x509.Certificate
	for _, a := range anchors {
		b, err := os.ReadFile(a)
		if err != nil {
			return err
		}
		cs, err := ekcert.ParsePEM(b)
		if err != nil {
			return fmt.Errorf("--ek-ca %s: %w", a, err)
		}
		certs = append(certs, cs...)
	}
	v, err := ekcert.New(ekcert.Config{Anchors: certs})
	if err != nil {
		return err
	}
	recs, err := readList(from, stdin, enroll.Read)
	if err != nil {
		return err
	}
	bar := newProgress(stderr)
	rep, err := enroll.Enroll(ctx, c, recs, enroll.Options{
		Settings: s, Verifier: v, AllowUnverified: allowUnverified, DryRun: dryRun,
		Meter: m, Progress: bar.update,
	})
	bar.end()
	if rep != nil {
		printEnrollReport(stdout, rep, asJSON)
	}
	if err != nil {
		return err
	}
	return reportError(rep)
}

// manageCmd runs enroll show, disable and delete.
func manageCmd(ctx context.Context, verb string, args []string, stdin io.Reader, stdout, stderr io.Writer, getenv func(string) string) error {
	fs := flag.NewFlagSet("edge-deploy enroll "+verb, flag.ContinueOnError)
	d := &dpsFlags{}
	d.register(fs)
	var from string
	var asJSON, dryRun bool
	fs.StringVar(&from, "from", "", "take the registration IDs in `FILE` too: one a line, or an identity file as enroll reads it (- for stdin)")
	fs.BoolVar(&asJSON, "json", false, "print JSON")
	if verb != "show" {
		fs.BoolVar(&dryRun, "dry-run", false, "report what would change, write nothing")
	}
	what := map[string]string{
		"show":    "Show the enrollments of registration IDs: settings, status, registration.",
		"disable": "Disable enrollments, so that their devices can no longer register (enroll --status enabled brings them back).",
		"delete":  "Delete enrollments, to decommission their devices.",
	}[verb]
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: edge-deploy enroll %s [--from FILE] [flags] [REGISTRATION-ID...]\n\n%s\n\n", verb, what)
		fs.PrintDefaults()
	}
	if err := cli.ParseArgs(fs, args, stdout); err != nil {
		return err
	}
	ids := fs.Args()
	if from != "" {
		more, err := readList(from, stdin, enroll.ReadIDs)
		if err != nil {
			return err
		}
		ids = append(ids, more...)
	}
	if len(ids) == 0 {
		return cli.Usagef("enroll %s: give registration IDs or --from", verb)
	}
	c, m, err := d.client(getenv)
	if err != nil {
		return err
	}
	if verb == "show" {
		es, err := enroll.Show(ctx, c, ids, m)
		if err != nil {
			return err
		}
		printEnrollments(stdout, ids, es, asJSON)
		return nil
	}
	f := enroll.Disable
	if verb == "delete" {
		f = enroll.Delete
	}
	bar := newProgress(stderr)
	rep, err := f(ctx, c, ids, enroll.Options{DryRun: dryRun, Meter: m, Progress: bar.update})
	bar.end()
	if rep != nil {
		printEnrollReport(stdout, rep, asJSON)
	}
	if err != nil {
		return err
	}
	return reportError(rep)
}

// readList reads the file from (stdin for -) with read.
func readList[T any](from string, stdin io.Reader, read func(io.Reader) ([]T, error)) ([]T, error) {
	in, name := stdin, "stdin"
	if from != "-" {
		f, err := os.Open(from)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		in, name = f, from
	}
	out, err := read(in)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return out, nil
}

// reportError is the error of a run that left identities not as asked.
func reportError(rep *enroll.Report) error {
	if rep.OK() {
		return nil
	}
	t := rep.Totals
	return fmt.Errorf("%d of %d identities not done: %d refused, %d failed, %d in conflict (a re-run settles conflicts)",
		t[enroll.Refused]+t[enroll.Failed]+t[enroll.Conflict], len(rep.Results), t[enroll.Refused], t[enroll.Failed], t[enroll.Conflict])
}

func printEnrollReport(w io.Writer, rep *enroll.Report, asJSON bool) {
	if asJSON {
		b, _ := json.MarshalIndent(rep, "", "  ")
		fmt.Fprintf(w, "%s\n", b)
		return
	}
	would := ""
	if rep.DryRun {
		would = "would be "
	}
	for _, r := range rep.Results {
		if r.Outcome == enroll.Unchanged || r.Outcome == enroll.Absent {
			continue
		}
		line := fmt.Sprintf("%s%-9s %s", would, r.Outcome, r.RegistrationID)
		if r.Line > 0 {
			line += fmt.Sprintf(" (line %d)", r.Line)
		}
		if len(r.Changes) > 0 {
			line += ": " + strings.Join(r.Changes, ", ")
		}
		if r.Error != "" {
			line += ": " + r.Error
		}
		if r.EK != nil && r.Error == "" {
			if r.EK.Verified && r.EK.OperatorAnchor {
				line += fmt.Sprintf(" [%s %s, operator CA %s]", r.EK.Manufacturer, r.EK.Model, r.EK.Anchor)
			} else if r.EK.Verified {
				line += fmt.Sprintf(" [%s %s]", r.EK.Manufacturer, r.EK.Model)
			} else {
				line += " [EK NOT VERIFIED: " + r.EK.Problem + "]"
			}
		}
		fmt.Fprintln(w, line)
	}
	var parts []string
	for _, o := range []enroll.Outcome{enroll.Created, enroll.Updated, enroll.Disabled, enroll.Deleted, enroll.Unchanged, enroll.Absent, enroll.Conflict, enroll.Refused, enroll.Failed} {
		if n := rep.Totals[o]; n > 0 {
			parts = append(parts, fmt.Sprintf("%d %s", n, o))
		}
	}
	fmt.Fprintf(w, "%d identities: %s%s; %s, %d DPS operations (%.0f a minute), %d throttled\n",
		len(rep.Results), would, strings.Join(parts, ", "), rep.Duration.Round(time.Millisecond), rep.Operations, rep.OperationsPerMinute, rep.Throttled)
}

func printEnrollments(w io.Writer, ids []string, es []*dpsservice.Enrollment, asJSON bool) {
	if asJSON {
		type entry struct {
			RegistrationID string                 `json:"registrationId"`
			Enrollment     *dpsservice.Enrollment `json:"enrollment"`
		}
		out := make([]entry, len(ids))
		for i := range ids {
			out[i] = entry{ids[i], es[i]}
		}
		b, _ := json.MarshalIndent(out, "", "  ")
		fmt.Fprintf(w, "%s\n", b)
		return
	}
	for i, e := range es {
		if e == nil {
			fmt.Fprintf(w, "%s: not enrolled\n", ids[i])
			continue
		}
		edge := e.Capabilities != nil && e.Capabilities.IoTEdge
		line := fmt.Sprintf("%s: %s, device %s, IoT Edge %t", e.RegistrationID, e.ProvisioningStatus, orID(e.DeviceID, e.RegistrationID), edge)
		if len(e.IoTHubs) > 0 {
			line += ", hubs " + strings.Join(e.IoTHubs, " ")
		}
		if e.AllocationPolicy != "" {
			line += ", allocation " + e.AllocationPolicy
		}
		if rs := e.RegistrationState; rs != nil {
			line += ", registration " + rs.Status
			if rs.AssignedHub != "" {
				line += " to " + rs.AssignedHub + " as " + rs.DeviceID
			}
			if rs.ErrorMessage != "" {
				line += ": " + rs.ErrorMessage
			}
		} else {
			line += ", never registered"
		}
		fmt.Fprintln(w, line)
	}
}

func orID(deviceID, regID string) string {
	if deviceID == "" {
		return regID + " (the registration ID)"
	}
	return deviceID
}

// progress draws a bar on stderr when it is a terminal, nothing otherwise.
type progress struct {
	w    io.Writer
	mu   sync.Mutex
	last string
}

func newProgress(stderr io.Writer) *progress {
	if f, ok := stderr.(*os.File); ok {
		if fi, err := f.Stat(); err == nil && fi.Mode()&os.ModeCharDevice != 0 {
			return &progress{w: f}
		}
	}
	return &progress{}
}

func (p *progress) update(done, total int) {
	if p.w == nil || total == 0 {
		return
	}
	const width = 40
	fill := width * done / total
	line := fmt.Sprintf("\r[%s%s] %d/%d", strings.Repeat("#", fill), strings.Repeat(".", width-fill), done, total)
	p.mu.Lock()
	defer p.mu.Unlock()
	if line != p.last {
		io.WriteString(p.w, line)
		p.last = line
	}
}

func (p *progress) end() {
	if p.w != nil && p.last != "" {
		io.WriteString(p.w, "\n")
	}
}
