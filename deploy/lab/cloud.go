package lab

import (
	"context"
	"fmt"
	mathrand "math/rand/v2"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"

	"github.com/edgetpm/edgetpm/internal/atomicfile"
	"github.com/edgetpm/edgetpm/internal/daemon"
	"github.com/edgetpm/edgetpm/internal/emulator/dpsemu"
	"github.com/edgetpm/edgetpm/provisioner/tpm"
)

// Hub is the lab's IoT hub.
const Hub = dpsemu.DefaultHub

// startTPM serves the reference simulator, or starts swtpm with its state
// in the state folder, unless the lab was given a TPM's URI.
func (l *Lab) startTPM(ctx context.Context) (string, error) {
	switch l.cfg.TPM {
	case "":
	case "swtpm":
		return l.startSwtpm(ctx)
	default:
		l.printf("tpm", "%s", l.cfg.TPM)
		return l.cfg.TPM, nil
	}
	seed, err := l.simulatorSeed()
	if err != nil {
		return "", err
	}
	uri, stop, err := serveSimulator(seed)
	if err != nil {
		return "", err
	}
	l.onClose(stop)
	l.printf("tpm", "reference TPM simulator at %s", uri)
	return uri, nil
}

// startSwtpm runs swtpm on two adjacent loopback ports, the TPM's state
// kept in the state folder from one lab to the next.
func (l *Lab) startSwtpm(ctx context.Context) (string, error) {
	bin, err := exec.LookPath("swtpm")
	if err != nil {
		return "", fmt.Errorf("tpm: %w", err)
	}
	dir := l.path("swtpm")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", err
	}
	var addr string
	err = l.startDaemon(ctx, "swtpm", func(int) (daemon.Spec, error) {
		port, err := daemon.FreePorts(2)
		if err != nil {
			return daemon.Spec{}, err
		}
		addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		return daemon.Spec{Path: bin, Ready: daemon.Listening(addr), Args: []string{"socket", "--tpm2",
			"--tpmstate", "dir=" + dir,
			"--server", fmt.Sprintf("type=tcp,port=%d,bindaddr=127.0.0.1", port),
			"--ctrl", fmt.Sprintf("type=tcp,port=%d,bindaddr=127.0.0.1", port+1),
			"--flags", "not-need-init,startup-clear"}}, nil
	})
	if err != nil {
		return "", fmt.Errorf("tpm: %w", err)
	}
	l.printf("tpm", "swtpm (%s) at swtpm://%s, state in %s", bin, addr, dir)
	return "swtpm://" + addr, nil
}

// simulatorSeed is the simulator's seed, made once and kept in the state
// folder (0600: it is the TPM's every secret).
func (l *Lab) simulatorSeed() (int64, error) {
	path := l.path("tpm.seed")
	b, err := os.ReadFile(path)
	if err == nil {
		if seed, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64); err == nil {
			return seed, nil
		}
	}
	seed := mathrand.Int64()
	return seed, atomicfile.WriteFile(path, []byte(strconv.FormatInt(seed, 10)+"\n"), 0o600)
}

// startDPS serves the DPS emulator over HTTPS with the lab CA.
func (l *Lab) startDPS() (*DPSEmulator, error) {
	// retry-after 1: the least DPS sends and the C SDK honours (docs/dps-protocol.md#registering-and-polling).
	d, err := StartDPS(l.stateDir, l.ca, DPSConfig{RetryAfter: 1, Named: l.cfg.Named, Log: l.log.With().Str("part", "dps").Logger()})
	if err != nil {
		return nil, err
	}
	l.onClose(d.Close)
	l.printf("dps", "DPS emulator at %s%s, id scope %s", d.Endpoint, NamedNote(d.Named, d.NamedErr), d.IDScope())
	return d, nil
}

// enroll reads the TPM's endorsement key and creates its individual
// enrollment through DPS's service API, as lab enroll does.
func (l *Lab) enroll(ctx context.Context, tpmURI string) error {
	t, err := tpm.Open(tpmURI, tpm.Config{})
	if err != nil {
		return fmt.Errorf("tpm: %w", err)
	}
	id, err := t.Identity(ctx)
	t.Close()
	if err != nil {
		return fmt.Errorf("tpm: %w", err)
	}
	c, err := DPSServiceClient(l.stateDir)
	if err != nil {
		return err
	}
	if err := Enroll(ctx, c, id.RegistrationID, "", id.EndorsementKey, true); err != nil {
		return err
	}
	l.identity.RegistrationID = id.RegistrationID
	l.printf("enroll", "registration ID %s enrolled with the TPM's endorsement key through the DPS service API", id.RegistrationID)
	return nil
}

// startHub serves the IoT Hub emulator: MQTT over TLS, as edgeHub and IoT
// Hub, and the REST API, with the device keys DPS assigns.
func (l *Lab) startHub() (*HubEmulator, error) {
	h, err := StartHub(l.stateDir, l.ca, HubConfig{Named: l.cfg.Named, Log: l.log.With().Str("part", "hub").Logger()})
	if err != nil {
		return nil, err
	}
	l.onClose(h.Close)
	l.hub = h
	if l.service, err = ServiceClient(l.stateDir); err != nil {
		return nil, err
	}
	l.printf("hub", "IoT Hub emulator %s: MQTT at %s (gateway %s), service API at %s%s", h.HubHostName(), h.MQTT, h.GatewayHostName(), h.Service, NamedNote(h.Named, h.NamedErr))
	return h, nil
}

// GatewayHostName is this machine's host name as an edge device's
// hostname in config.toml and edgeHub's certificate carry it: lower case,
// or edge-lab when it has none usable.
func GatewayHostName() string {
	h, err := os.Hostname()
	if err != nil || h == "" || strings.ContainsAny(h, "_ ") {
		return "edge-lab"
	}
	return strings.ToLower(h)
}
