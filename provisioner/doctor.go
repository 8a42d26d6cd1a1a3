package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/rs/zerolog"

	"github.com/edgetpm/edgetpm/internal/tlsconfig"
	"github.com/edgetpm/edgetpm/provisioner/dps"
	"github.com/edgetpm/edgetpm/provisioner/edgeconfig"
	"github.com/edgetpm/edgetpm/provisioner/settings"
	"github.com/edgetpm/edgetpm/provisioner/tpm"
)

// maxClockSkew is how far the clock may be from DPS's: SAS tokens are
// refused beyond five minutes (docs/dps-protocol.md#registration-sas-token).
const maxClockSkew = 5 * time.Minute

// aziotSockets are the sockets the IoT Edge services listen on once
// 'config apply' has started them (iot-identity-service, aziot-edged).
var aziotSockets = []string{
	"/run/aziot/keyd.sock", "/run/aziot/certd.sock", "/run/aziot/identityd.sock", "/run/aziot/tpmd.sock",
	"/var/run/iotedge/mgmt.sock", "/var/run/iotedge/workload.sock",
}

// check is one line of doctor's report.
type check struct {
	Name string `json:"check"`
	OK   bool   `json:"ok"`
	// Pending marks what provision makes, on a device not provisioned yet:
	// neither passed nor failed.
	Pending bool   `json:"pending,omitempty"`
	Detail  string `json:"detail"`
	Remedy  string `json:"remedy,omitempty"`
}

// errChecksFailed is doctor's error when a check fails: exit code 1.
var errChecksFailed = errors.New("checks failed")

func runDoctor(ctx context.Context, args []string, stdout, _ io.Writer, getenv env) error {
	fs := newFlagSet("doctor", "doctor [--config FILE] [flags] [--json]")
	l := settings.NewLoader(fs, settings.TPMGroup|settings.DPSGroup|settings.AziotGroup|settings.ContainerdGroup|settings.StateGroup)
	asJSON := fs.Bool("json", false, "print JSON")
	s, help, err := loadSettings(fs, l, args, stdout, getenv)
	if help || err != nil {
		return err
	}
	d := &doctor{s: s}
	// No saved assignment: DPS never assigned this device, so what
	// provision makes (hub key, config.toml, the aziot services) is still
	// to come rather than broken.
	if _, err := os.Stat(s.State); errors.Is(err, os.ErrNotExist) {
		d.before = true
	}
	d.tpm(ctx)
	d.dps(ctx)
	d.enrollment(ctx)
	d.config()
	d.aziot()
	d.containerd(ctx)

	failed := 0
	for _, c := range d.checks {
		if !c.OK && !c.Pending {
			failed++
		}
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(d.checks); err != nil {
			return err
		}
	} else {
		if d.before {
			fmt.Fprintf(stdout, "Not provisioned yet (no %s): TODO marks what 'edge-provisioner provision' does.\n", s.State)
		}
		for _, c := range d.checks {
			mark := "PASS"
			switch {
			case c.Pending:
				mark = "TODO"
			case !c.OK:
				mark = "FAIL"
			}
			fmt.Fprintf(stdout, "%s  %-24s %s\n", mark, c.Name, c.Detail)
			if !c.OK && c.Remedy != "" {
				fmt.Fprintf(stdout, "      %-24s remedy: %s\n", "", c.Remedy)
			}
		}
	}
	if failed > 0 {
		return fmt.Errorf("%d of %d %w", failed, len(d.checks), errChecksFailed)
	}
	return nil
}

// doctor runs the checks, each independent of the others where it can be.
type doctor struct {
	s *settings.Settings
	// before is a device not provisioned yet: no saved assignment.
	before bool
	// dpsReached is set once DPS answered over verified TLS.
	dpsReached bool
	checks     []check
}

func (d *doctor) pass(name, format string, args ...any) {
	d.checks = append(d.checks, check{Name: name, OK: true, Detail: fmt.Sprintf(format, args...)})
}

func (d *doctor) fail(name, detail, remedy string) {
	d.checks = append(d.checks, check{Name: name, Detail: detail, Remedy: remedy})
}

// missing reports something provision makes: pending before provisioning,
// a failure after.
func (d *doctor) missing(name, detail, remedy string) {
	if !d.before {
		d.fail(name, detail, remedy)
		return
	}
	d.checks = append(d.checks, check{Name: name, Pending: true, Detail: "not provisioned yet: " + detail, Remedy: remedy})
}

func (d *doctor) tpm(ctx context.Context) {
	// Last, once the TPM is closed: swtpm serves one connection at a time.
	defer d.tcti()
	uri := d.s.TPM.URI
	t, err := openTPM(d.s)
	if err != nil {
		d.fail("TPM device", err.Error(), tpmRemedy(uri, err))
		for _, name := range []string{"resource manager", "EK and SRK", "hierarchy authorization", "hub key"} {
			d.fail(name, "not checked: the TPM cannot be opened", "")
		}
		return
	}
	defer t.Close()
	d.pass("TPM device", "opened %s", uri)

	switch path, ok := strings.CutPrefix(uri, "device:"); {
	case !ok:
		d.pass("resource manager", "%s is a simulator, not shared through the kernel", uri)
	case strings.HasPrefix(filepath.Base(path), "tpmrm"):
		d.pass("resource manager", "%s is the kernel's resource manager", path)
	default:
		d.fail("resource manager", path+" is the raw TPM, which one process at a time may hold",
			"use --tpm device:/dev/tpmrm0 (tpm.uri): aziot-tpmd needs the TPM too")
	}

	st, err := t.Status(ctx)
	switch {
	case err != nil:
		d.fail("EK and SRK", err.Error(), "")
	case st.EndorsementKey && st.StorageRootKey:
		d.pass("EK and SRK", "persisted at %#x and %#x (manufacturer %s)", uint32(tpm.EKHandle), uint32(tpm.SRKHandle), st.Manufacturer)
	default:
		d.missing("EK and SRK", fmt.Sprintf("EK persisted: %v, SRK persisted: %v", st.EndorsementKey, st.StorageRootKey),
			"run 'edge-provisioner identity' or 'provision', which create and persist them")
	}

	if err := t.CheckAuthorization(ctx); err != nil {
		d.fail("hierarchy authorization", err.Error(), "give the passwords in tpm.endorsement_password_file and tpm.owner_password_file, or in $"+settings.EnvEndorsementAuth+" and $"+settings.EnvOwnerAuth)
	} else {
		d.pass("hierarchy authorization", "the endorsement and owner passwords work")
	}

	switch {
	case st == nil:
		d.fail("hub key", "not checked: the TPM's status could not be read", "")
	case st.AuthKey:
		d.pass("hub key", "present at %#x (auth_key_index %#x)", st.AuthKeyHandle, d.s.TPM.AuthKeyIndex)
	default:
		d.missing("hub key", fmt.Sprintf("nothing at %#x (auth_key_index %#x)", st.AuthKeyHandle, d.s.TPM.AuthKeyIndex),
			"run 'edge-provisioner register' or 'provision', once the device is enrolled in DPS")
	}
}

// tpmRemedy is what to do when the TPM at uri does not open, by the URI's
// kind: firmware and drivers are a device's business only.
func tpmRemedy(uri string, err error) string {
	switch {
	case errors.Is(err, tpm.ErrBusy):
		return "stop the process that holds the TPM (aziot-tpmd: systemctl stop aziot-tpmd.socket aziot-tpmd; a running edge-relay; tpm2-tools; another edge-provisioner), then run doctor again"
	case errors.Is(err, tpm.ErrKind):
		return "give the URI of the simulator that runs there (tpm.uri, --tpm): swtpm://HOST:PORT for swtpm, mssim://HOST:PORT for Microsoft's reference simulator"
	}
	kind := tpm.Kind(uri) // "" when uri does not parse
	var u *url.URL
	var port int
	if kind == "swtpm" || kind == "mssim" {
		u, _ = url.Parse(uri)
		port, _ = strconv.Atoi(u.Port())
	}
	switch kind {
	case "swtpm":
		return fmt.Sprintf("start swtpm with its command port at %s and its control channel on the next port (swtpm socket --tpm2 --tpmstate dir=DIR --server type=tcp,port=%d --ctrl type=tcp,port=%d --flags not-need-init,startup-clear), or fix tpm.uri (--tpm)",
			u.Host, port, port+1)
	case "mssim":
		return fmt.Sprintf("start Microsoft's TPM 2.0 reference simulator with its command port at %s and its platform port at %d, or fix tpm.uri (--tpm); for swtpm use swtpm://%s",
			u.Host, port+1, u.Host)
	case "device":
		return "enable the TPM 2.0 in the firmware and load its driver (tpm_crb or tpm_tis); run as root or in the tss group"
	}
	return "set tpm.uri (--tpm) to device:/dev/tpmrm0, swtpm://HOST:PORT or mssim://HOST:PORT"
}

// tcti checks the TCTI aziot-tpmd is given: config.toml's, or before
// provision has written one, the one it will write. It opens it as
// tpm2-tss's TCTI of that kind does, which is what tpm.OpenTransport does.
func (d *doctor) tcti() {
	const name = "aziot-tpmd TCTI"
	var tcti, from string
	if doc, err := edgeconfig.Load(d.s.Aziot.Config); err == nil && doc.Provisioning().Method == "tpm" {
		tcti, from = doc.Provisioning().TCTI, d.s.Aziot.Config
		if tcti == "" {
			tcti = "device" // aziot-tpmd's default
		}
	} else {
		t, err := d.s.TPM.AziotTCTI()
		if err != nil {
			d.fail(name, err.Error(), "set tpm.tcti (--tcti) to the TCTI by which aziot-tpmd reaches the TPM")
			return
		}
		tcti, from = t, "to be written by provision"
	}
	uri, err := tpm.TCTIURI(tcti)
	if err != nil {
		d.fail(name, fmt.Sprintf("%q (%s): %v", tcti, from, err), "run 'edge-provisioner provision', which writes the TCTI for tpm.uri, or set tpm.tcti (--tcti)")
		return
	}
	tr, err := tpm.OpenTransport(uri)
	if err != nil {
		d.fail(name, fmt.Sprintf("%q (%s) does not open as tpm2-tss opens it: %v", tcti, from, err), tctiRemedy(uri, err))
		return
	}
	tr.Close()
	d.pass(name, "%q (%s) opens as tpm2-tss opens it", tcti, from)
}

// tctiRemedy is what to do when the TCTI, which names the TPM at uri, does
// not open: for a simulator of the other kind, the TCTI to write.
func tctiRemedy(uri string, err error) string {
	if errors.Is(err, tpm.ErrKind) {
		other := "swtpm" + strings.TrimPrefix(uri, "mssim")
		if tpm.Kind(uri) == "swtpm" {
			other = "mssim" + strings.TrimPrefix(uri, "swtpm")
		}
		if tcti, terr := tpm.TCTI(other); terr == nil {
			return fmt.Sprintf("the TPM there is of the other kind: run 'edge-provisioner provision --tpm %s', which writes tcti = %q, then 'iotedge config apply'", other, tcti)
		}
	}
	return tpmRemedy(uri, err)
}

func (d *doctor) dps(ctx context.Context) {
	u, err := url.Parse(d.s.DPS.Endpoint)
	if err != nil {
		d.fail("DPS DNS", err.Error(), "fix dps.endpoint")
		return
	}
	host := u.Hostname()
	addrs, err := net.DefaultResolver.LookupHost(ctx, host)
	if err != nil {
		d.fail("DPS DNS", err.Error(), "check /etc/resolv.conf and that the network allows DNS")
		d.fail("DPS TLS", "not checked: "+host+" does not resolve", "")
		d.fail("clock", "not checked: DPS is not reachable", "")
		return
	}
	d.pass("DPS DNS", "%s is %s", host, strings.Join(addrs, ", "))

	roots, err := tlsconfig.TrustFile(d.s.DPS.CAFile)
	if err != nil {
		d.fail("DPS TLS", err.Error(), "fix dps.ca_file")
		return
	}
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, d.s.DPS.Endpoint, nil)
	if err != nil {
		d.fail("DPS TLS", err.Error(), "fix dps.endpoint")
		return
	}
	start := time.Now()
	resp, err := dps.NewHTTPClient(roots).Do(req)
	if err != nil {
		d.fail("DPS TLS", err.Error(), "allow outbound HTTPS (443) to "+host+" in the firewall or proxy (HTTPS_PROXY); for a private CA set dps.ca_file")
		d.fail("clock", "not checked: DPS is not reachable", "")
		return
	}
	resp.Body.Close()
	rtt := time.Since(start)
	d.dpsReached = true
	d.pass("DPS TLS", "%s answered over %s, certificate verified (%v)", host, tlsVersion(resp), rtt.Round(time.Millisecond))

	date, err := http.ParseTime(resp.Header.Get("Date"))
	if err != nil {
		d.fail("clock", "DPS sent no Date header to compare with", "")
		return
	}
	// The Date header has one-second resolution and was sent mid-request.
	skew := time.Until(date.Add(rtt / 2)).Round(time.Second)
	if skew < 0 {
		skew = -skew
	}
	if skew > maxClockSkew {
		d.fail("clock", fmt.Sprintf("%v away from DPS's clock; SAS tokens are refused beyond %v", skew, maxClockSkew),
			"synchronise the clock: timedatectl set-ntp true (or chrony), and check the RTC battery")
		return
	}
	d.pass("clock", "within %v of DPS's clock", max(skew, time.Second))
}

// enrollment checks that DPS has an enrollment for this TPM with one
// challenge, which registers nothing. DPS's device API does not say whether
// the enrollment has the IoT Edge capability, so the check says what to
// look at instead.
func (d *doctor) enrollment(ctx context.Context) {
	const name = "DPS enrollment"
	switch {
	case d.s.DPS.IDScope == "":
		d.fail(name, "no ID scope", "set dps.id_scope (--id-scope), the ID scope on the DPS instance's overview")
		return
	case !d.dpsReached:
		d.fail(name, "not checked: DPS is not reachable", "")
		return
	}
	t, err := openTPM(d.s)
	if err != nil {
		d.fail(name, "not checked: the TPM cannot be opened", "")
		return
	}
	defer t.Close()
	st, err := t.Status(ctx)
	if err != nil {
		d.fail(name, "not checked: "+err.Error(), "")
		return
	}
	if !st.EndorsementKey || !st.StorageRootKey {
		// Identity would persist them; doctor changes nothing.
		d.missing(name, "not checked: the EK and SRK are not persisted",
			"run 'edge-provisioner identity', which persists them and shows what to enroll")
		return
	}
	id, err := t.Identity(ctx)
	if err != nil {
		d.fail(name, "not checked: "+err.Error(), "")
		return
	}
	roots, err := tlsconfig.TrustFile(d.s.DPS.CAFile)
	if err != nil {
		d.fail(name, err.Error(), "fix dps.ca_file")
		return
	}
	regID := registrationID(d.s, id)
	c := &dps.Client{IDScope: d.s.DPS.IDScope, Endpoint: d.s.DPS.Endpoint, HTTP: dps.NewHTTPClient(roots),
		Timeout: min(time.Duration(d.s.DPS.Timeout), 30*time.Second)}
	err = c.Challenge(ctx, dps.Request{RegistrationID: regID, EndorsementKey: id.EndorsementKey, StorageRootKey: id.StorageRootKey})
	if err != nil {
		d.fail(name, err.Error(), "enroll it: Manage enrollments > Add individual enrollment > mechanism TPM, with the endorsement key and registration ID 'edge-provisioner identity' shows, and 'IoT Edge device' set to True")
		return
	}
	d.pass(name, "DPS challenged registration ID %s in scope %s: it is enrolled with this TPM's endorsement key. "+
		"DPS does not tell a device whether the enrollment has the IoT Edge capability: check that 'IoT Edge device' is True on it", regID, d.s.DPS.IDScope)
}

func tlsVersion(resp *http.Response) string {
	if resp.TLS == nil {
		return "plain HTTP"
	}
	switch resp.TLS.Version {
	case 0x0304:
		return "TLS 1.3"
	case 0x0303:
		return "TLS 1.2"
	}
	return fmt.Sprintf("TLS %#x", resp.TLS.Version)
}

func (d *doctor) config() {
	const name = "config.toml"
	path := d.s.Aziot.Config
	if err := edgeconfig.CheckFolder(path); errors.Is(err, edgeconfig.ErrNoFolder) {
		d.fail(name, fmt.Sprintf("%s does not exist", filepath.Dir(path)), edgeconfig.ErrNoFolder.Error()+"; then 'edge-provisioner provision' writes config.toml")
		return
	}
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		d.missing(name, path+" does not exist", "run 'edge-provisioner provision', which writes it")
		return
	}
	if err != nil {
		d.fail(name, err.Error(), "")
		return
	}
	if err := edgeconfig.Validate(data); err != nil {
		d.fail(name, err.Error(), "fix it, or run 'edge-provisioner provision' to set the provisioning part")
		return
	}
	doc, err := edgeconfig.Parse(data)
	if err != nil {
		d.fail(name, err.Error(), "")
		return
	}
	p := doc.Provisioning()
	if p.Source != "dps" || p.Method != "tpm" {
		d.fail(name, fmt.Sprintf("%s provisions by %q (attestation %q), not DPS with TPM", path, p.Source, p.Method), "run 'edge-provisioner provision --force'")
		return
	}
	d.pass(name, "%s is valid: DPS with TPM, ID scope %s, registration ID %s", path, p.IDScope, p.RegistrationID)
}

func (d *doctor) aziot() {
	var missing []string
	for _, s := range aziotSockets {
		if _, err := os.Stat(s); err != nil {
			missing = append(missing, s)
		}
	}
	if len(missing) > 0 {
		d.missing("aziot services", "no "+strings.Join(missing, ", "),
			"install aziot-edge, run 'iotedge config apply', then see 'iotedge system status' and 'iotedge check'")
		return
	}
	d.pass("aziot services", "keyd, certd, identityd, tpmd and edged are listening")
}

func (d *doctor) containerd(ctx context.Context) {
	s := *d.s
	s.Images.DockerSocket = "" // only the daemon is checked here
	c, err := newContainerd(ctx, &s, zerolog.Nop())
	if err != nil {
		d.fail("containerd", err.Error(), "start containerd (systemctl start containerd), or point images.containerd_address at Docker's (/run/containerd/containerd.sock or /run/docker/containerd/containerd.sock)")
		return
	}
	defer c.Close()
	v, err := c.Version(ctx)
	if err != nil {
		d.fail("containerd", err.Error(), "")
		return
	}
	d.pass("containerd", "containerd %s at %s", v, s.Images.ContainerdAddress)
}
