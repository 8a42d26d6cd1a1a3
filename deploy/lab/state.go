package lab

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/rs/zerolog"

	"github.com/edgetpm/edgetpm/deploy/enroll"
	"github.com/edgetpm/edgetpm/internal/atomicfile"
	"github.com/edgetpm/edgetpm/internal/dpsservice"
	"github.com/edgetpm/edgetpm/internal/emulator/dpsemu"
	"github.com/edgetpm/edgetpm/internal/emulator/hubemu"
	"github.com/edgetpm/edgetpm/internal/emulator/pki"
	"github.com/edgetpm/edgetpm/internal/emulator/registry"
	"github.com/edgetpm/edgetpm/internal/hubservice"
	"github.com/edgetpm/edgetpm/internal/sas"
	"github.com/edgetpm/edgetpm/internal/tlsconfig"
	"github.com/edgetpm/edgetpm/provisioner/dps"
)

// Files of a lab state folder, which the lab's daemons (edge-deploy lab
// dps, hub, workload, up) share and its commands (lab enroll, lab twin set,
// apply --lab) read.
const (
	DPSStateFile    = "dps.json"      // the DPS emulator's scope, keys, enrollments (0600)
	RegistryFile    = "registry.json" // devices DPS assigned, read by the hub
	DPSConnFile     = "service.connstr"
	IDScopeFile     = "idscope"
	DPSEndpointFile = "endpoint"     // https URL of the DPS device and service API
	HubEndpointFile = "hub.endpoint" // host:port of MQTT over TLS
	HubServiceFile  = "hub.service"  // base URL of the hub's service API
	HubConnFile     = "hub.connstr"  // the service API's iothubowner connection string (0600)
	DeviceFile      = "device"       // the device ID lab up provisioned
)

// OpenState makes the state folder dir (0700) and loads or creates the lab
// CA in it. It returns the folder's absolute path.
func OpenState(dir string) (string, *pki.CA, error) {
	stateDir, err := filepath.Abs(dir)
	if err != nil {
		return "", nil, fmt.Errorf("state folder: %w", err)
	}
	if err := os.MkdirAll(stateDir, 0o700); err != nil {
		return "", nil, fmt.Errorf("create state folder: %w", err)
	}
	ca, err := pki.LoadOrCreateCA(stateDir)
	return stateDir, ca, err
}

// ServicePolicy returns the lab hub's iothubowner policy, made once with a
// random key and kept in the state folder (0600) for edge-deploy's service
// commands.
func ServicePolicy(stateDir, hub string) (sas.Policy, error) {
	path := filepath.Join(stateDir, HubConnFile)
	if b, err := os.ReadFile(path); err == nil {
		p, err := sas.ParsePolicy(string(b))
		if err == nil && strings.EqualFold(p.HostName, hub) {
			return p, nil
		}
	}
	key := make([]byte, 32)
	rand.Read(key)
	p := sas.Policy{HostName: hub, KeyName: "iothubowner", Key: key}
	return p, atomicfile.WriteFile(path, []byte(p.ConnectionString()+"\n"), 0o600)
}

// RegisteredDevices lists the devices of hub in the lab's registry, read
// afresh (the DPS emulator adds them as they register).
func RegisteredDevices(stateDir, hub string) []string {
	r, err := registry.New(filepath.Join(stateDir, RegistryFile))
	if err != nil {
		return nil
	}
	var out []string
	for _, d := range r.List() {
		if strings.EqualFold(d.Hub, hub) {
			out = append(out, d.DeviceID)
		}
	}
	return out
}

// newDPS returns the lab's DPS emulator, with its state and the device
// registry in the state folder, and writes its ID scope and service
// connection string (0600) there for lab enroll.
func newDPS(stateDir string, hubs []dpsemu.Hub, retryAfter int, log zerolog.Logger) (*dpsemu.Server, error) {
	reg, err := registry.New(filepath.Join(stateDir, RegistryFile))
	if err != nil {
		return nil, err
	}
	emu, err := dpsemu.New(dpsemu.Config{
		StateFile:  filepath.Join(stateDir, DPSStateFile),
		Registry:   reg,
		Hubs:       hubs,
		RetryAfter: retryAfter,
		Log:        log,
	})
	if err != nil {
		return nil, err
	}
	if err := atomicfile.WriteFile(filepath.Join(stateDir, DPSConnFile), []byte(emu.ConnectionString().ConnectionString()+"\n"), 0o600); err != nil {
		return nil, err
	}
	return emu, atomicfile.WriteFile(filepath.Join(stateDir, IDScopeFile), []byte(emu.IDScope()+"\n"), 0o644)
}

// newHub returns the lab's emulator of IoT hub hub for the edge device
// gateway: device keys from the registry lab dps fills, module keys from
// its own module registry, the iothubowner policy of ServicePolicy, and
// the registered devices as the targets of deployments.
func newHub(stateDir, hub, gateway string, routes map[string]string, log zerolog.Logger) (*hubemu.Server, error) {
	owner, err := ServicePolicy(stateDir, hub)
	if err != nil {
		return nil, err
	}
	return hubemu.New(hubemu.Config{
		HubHostName:     hub,
		GatewayHostName: gateway,
		Key:             registry.Lookup(filepath.Join(stateDir, RegistryFile), hub),
		Routes:          routes,
		ServicePolicies: map[string][]byte{owner.KeyName: owner.Key},
		Devices:         func() []string { return RegisteredDevices(stateDir, hub) },
		Log:             log,
	})
}

// readState reads a file of the state folder that daemon (lab dps, lab
// hub) writes while it runs.
func readState(stateDir, name, daemon string) (string, error) {
	b, err := os.ReadFile(filepath.Join(stateDir, name))
	if err != nil {
		return "", fmt.Errorf("read the lab's %s (is 'edge-deploy lab %s --state-dir %s' running?): %w", name, daemon, stateDir, err)
	}
	return strings.TrimSpace(string(b)), nil
}

// trustLab returns an HTTP client that trusts the lab CA of the state
// folder.
func trustLab(stateDir string) (*http.Client, error) {
	roots, err := tlsconfig.TrustFile(filepath.Join(stateDir, pki.CertFile))
	if err != nil {
		return nil, err
	}
	return tlsconfig.HTTPClient(roots, time.Minute), nil
}

// ServiceClient returns a client of the running lab hub's service API, as
// an operator reaches IoT Hub: its URL, iothubowner connection string and
// CA from the state folder.
func ServiceClient(stateDir string) (*hubservice.Client, error) {
	endpoint, err := readState(stateDir, HubServiceFile, "hub")
	if err != nil {
		return nil, err
	}
	cs, err := readState(stateDir, HubConnFile, "hub")
	if err != nil {
		return nil, err
	}
	conn, err := sas.ParsePolicy(cs)
	if err != nil {
		return nil, err
	}
	hc, err := trustLab(stateDir)
	if err != nil {
		return nil, err
	}
	return &hubservice.Client{Conn: conn, Endpoint: endpoint, HTTP: hc}, nil
}

// DeviceClient returns a client of the running lab hub's service API that
// signs as device of hub, with the device's key from the lab's registry:
// by hand, the lab stands in for the device's TPM.
func DeviceClient(stateDir, hub, device string) (*hubservice.Client, error) {
	r, err := registry.New(filepath.Join(stateDir, RegistryFile))
	if err != nil {
		return nil, err
	}
	d, ok := r.Get(hub, device)
	if !ok || d.Status == registry.StatusDisabled {
		return nil, fmt.Errorf("device %q of %s is not in the lab's registry: register it through lab dps first", device, hub)
	}
	endpoint, err := readState(stateDir, HubServiceFile, "hub")
	if err != nil {
		return nil, err
	}
	hc, err := trustLab(stateDir)
	if err != nil {
		return nil, err
	}
	return &hubservice.Client{
		Device:   &hubservice.Device{HubHostName: hub, DeviceID: device, Signer: sas.Key(d.PrimaryKey)},
		Endpoint: endpoint, HTTP: hc,
	}, nil
}

// DPSServiceClient returns a client of the running lab DPS's service API,
// as an operator's tooling reaches DPS: its endpoint, connection string
// and CA from the state folder.
func DPSServiceClient(stateDir string) (*dpsservice.Client, error) {
	endpoint, err := readState(stateDir, DPSEndpointFile, "dps")
	if err != nil {
		return nil, err
	}
	cs, err := readState(stateDir, DPSConnFile, "dps")
	if err != nil {
		return nil, err
	}
	conn, err := sas.ParsePolicy(cs)
	if err != nil {
		return nil, err
	}
	roots, err := tlsconfig.TrustFile(filepath.Join(stateDir, pki.CertFile))
	if err != nil {
		return nil, err
	}
	return &dpsservice.Client{Conn: conn, Endpoint: endpoint, HTTP: dps.NewHTTPClient(roots)}, nil
}

// Enroll makes DPS hold the individual TPM enrollment of registrationID,
// with the TPM's endorsement key ek, through DPS's service API, as
// 'edge-deploy enroll' does (the lab's TPMs are simulators, so the EK is
// enrolled unverified, tagged so). An empty deviceID makes the device ID
// the registration ID; edge makes it an IoT Edge device.
func Enroll(ctx context.Context, c *dpsservice.Client, registrationID, deviceID string, ek []byte, edge bool) error {
	rec := enroll.Record{RegistrationID: registrationID, EndorsementKey: base64.StdEncoding.EncodeToString(ek)}
	rep, err := enroll.Enroll(ctx, c, []enroll.Record{rec}, enroll.Options{
		Settings:        enroll.Settings{DeviceID: deviceID, IoTEdge: &edge},
		AllowUnverified: true,
	})
	if err != nil {
		return fmt.Errorf("enroll: %w", err)
	}
	if r := rep.Results[0]; !rep.OK() {
		return fmt.Errorf("enroll %s: %s: %s", registrationID, r.Outcome, r.Error)
	}
	return nil
}
