package lab

import (
	"context"
	"errors"
	"fmt"
	"log"
	mathrand "math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"

	"github.com/edgetpm/edgetpm/internal/atomicfile"
	"github.com/edgetpm/edgetpm/internal/daemon"
	"github.com/edgetpm/edgetpm/internal/dpsservice"
	"github.com/edgetpm/edgetpm/internal/emulator/dpsemu"
	"github.com/edgetpm/edgetpm/provisioner/dps"
	"github.com/edgetpm/edgetpm/provisioner/tpm"
)

// Hub is the lab's IoT hub.
const Hub = dpsemu.DefaultHub

// dpsInfo is how devices and operators reach the DPS emulator.
type dpsInfo struct {
	endpoint, idScope string
	service           dpsservice.ConnectionString
}

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
	l.printf("tpm", "swtpm (%s) at mssim://%s, state in %s", bin, addr, dir)
	return "mssim://" + addr, nil
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
func (l *Lab) startDPS() (dpsInfo, error) {
	// retry-after 1: the least DPS sends and the C SDK honours (dps-tpm.md §8.2).
	emu, err := NewDPS(l.stateDir, nil, 1, l.log.With().Str("part", "dps").Logger())
	if err != nil {
		return dpsInfo{}, err
	}
	endpoint, err := l.serveHTTPS("dps", emu, "localhost", "127.0.0.1")
	if err != nil {
		return dpsInfo{}, err
	}
	d := dpsInfo{endpoint: endpoint, idScope: emu.IDScope(), service: emu.ConnectionString()}
	if err := atomicfile.WriteFile(l.path(DPSEndpointFile), []byte(endpoint+"\n"), 0o644); err != nil {
		return d, err
	}
	l.printf("dps", "DPS emulator at %s, id scope %s", endpoint, d.idScope)
	return d, nil
}

// enroll reads the TPM's endorsement key and creates its individual
// enrollment through DPS's service API, as an operator would in Azure.
func (l *Lab) enroll(ctx context.Context, tpmURI string, d dpsInfo) error {
	t, err := tpm.Open(tpmURI, tpm.Config{})
	if err != nil {
		return fmt.Errorf("tpm: %w", err)
	}
	id, err := t.Identity(ctx)
	t.Close()
	if err != nil {
		return fmt.Errorf("tpm: %w", err)
	}
	c := &dpsservice.Client{Conn: d.service, Endpoint: d.endpoint, HTTP: dps.NewHTTPClient(l.ca.Pool())}
	_, err = c.PutEnrollment(ctx, dpsservice.Enrollment{
		RegistrationID: id.RegistrationID,
		Attestation:    dpsservice.Attestation{Type: "tpm", TPM: &dpsservice.TPMAttestation{EndorsementKey: id.EndorsementKey}},
		Capabilities:   &dpsservice.Capabilities{IoTEdge: true},
	}, "")
	if err != nil {
		return fmt.Errorf("enroll: %w", err)
	}
	l.identity.RegistrationID = id.RegistrationID
	l.printf("enroll", "registration ID %s enrolled with the TPM's endorsement key through the DPS service API", id.RegistrationID)
	return nil
}

// hubInfo is how devices reach the IoT Hub emulator.
type hubInfo struct {
	mqtt    string // host:port of MQTT over TLS
	service string // base URL of the REST API
}

// startHub serves the IoT Hub emulator: MQTT over TLS, as edgeHub and IoT
// Hub, and the REST API, with the device keys DPS assigns.
func (l *Lab) startHub() (hubInfo, error) {
	gateway := GatewayHostName()
	emu, err := NewHub(l.stateDir, Hub, gateway, map[string]string{"upstream": "FROM /messages/* INTO $upstream"}, l.log.With().Str("part", "hub").Logger())
	if err != nil {
		return hubInfo{}, err
	}
	tlsConfig, err := l.ca.ServerTLS(gateway, Hub, "localhost", "127.0.0.1")
	if err != nil {
		return hubInfo{}, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return hubInfo{}, fmt.Errorf("hub: %w", err)
	}
	sctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- emu.Serve(sctx, ln, tlsConfig) }()
	l.onClose(func() error { cancel(); return <-done })
	l.hub = emu
	serviceURL, err := l.serveHTTPS("hub", emu.ServiceHandler(), gateway, Hub, "localhost", "127.0.0.1")
	if err != nil {
		return hubInfo{}, err
	}
	addr := ln.Addr().String()
	for name, v := range map[string]string{HubEndpointFile: addr, HubServiceFile: serviceURL} {
		if err := atomicfile.WriteFile(l.path(name), []byte(v+"\n"), 0o644); err != nil {
			return hubInfo{}, err
		}
	}
	l.printf("hub", "IoT Hub emulator %s: MQTT at %s (gateway %s), service API at %s", Hub, addr, gateway, serviceURL)
	return hubInfo{mqtt: addr, service: serviceURL}, nil
}

// serveHTTPS serves h over TLS on a loopback port until the lab closes,
// with a server certificate for names, and returns its base URL.
func (l *Lab) serveHTTPS(part string, h http.Handler, names ...string) (string, error) {
	tlsConfig, err := l.ca.ServerTLS(names...)
	if err != nil {
		return "", err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("%s: %w", part, err)
	}
	// HTTP/1.1, as the device SDKs speak it (dps-tpm.md §2.3).
	var protocols http.Protocols
	protocols.SetHTTP1(true)
	srv := &http.Server{
		Handler:           h,
		TLSConfig:         tlsConfig,
		Protocols:         &protocols,
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          log.New(l.log.With().Str("part", part).Logger(), "", 0),
	}
	done := make(chan error, 1)
	go func() { done <- srv.ServeTLS(ln, "", "") }()
	l.onClose(func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
		if err := <-done; !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("%s: %w", part, err)
		}
		return nil
	})
	return "https://" + ln.Addr().String(), nil
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
