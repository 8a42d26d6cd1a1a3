package lab

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/edgetpm/edgetpm/internal/daemon"

	"github.com/edgetpm/edgetpm/internal/tlsconfig"

	"github.com/google/go-tpm/tpm2"

	"github.com/edgetpm/edgetpm/internal/backoff"
	"github.com/edgetpm/edgetpm/internal/hubservice"
	"github.com/edgetpm/edgetpm/provisioner/dps"
	"github.com/edgetpm/edgetpm/provisioner/edgeconfig"
	"github.com/edgetpm/edgetpm/provisioner/tpm"
)

// runtime stands in for the device's IoT Edge runtime: aziot-identityd
// (provisioning by DPS through the TPM, as config.toml says), aziot-edged's
// workload API, and edgeAgent running the relay module with the IoT Edge
// environment and restarting it whenever it exits (restartPolicy always).
type runtime struct {
	launch      launcher
	spec        moduleSpec
	metricsAddr string

	mu    sync.Mutex
	count int // starts of the module

	cancel context.CancelFunc
	done   chan struct{}
}

// moduleSpec is what a launcher runs.
type moduleSpec struct {
	env     []string // IOTEDGE_* and the relay's own
	args    []string // after the binary
	socket  string   // the workload socket on the host
	dataDir string   // the relay's queue on the host
	logFile string
}

// launcher runs a module until it exits, or until ctx ends, when it stops
// it (SIGTERM, then SIGKILL) and removes what it made. started is called
// once the module runs.
type launcher interface {
	run(ctx context.Context, m moduleSpec, started func()) error
	String() string
}

// Where the relay finds its workload socket inside a container, as IoT
// Edge mounts it (docs/edge-protocol.md#module-environment).
const containerSocket = "/var/run/iotedge/workload.sock"

func (l *Lab) startRuntime(ctx context.Context, b binaries, hub *HubEmulator) error {
	start := time.Now()
	doc, err := edgeconfig.Load(l.path("config.toml"))
	if err != nil {
		return fmt.Errorf("runtime: %w", err)
	}
	p := doc.Provisioning()
	if p.Source != "dps" || p.Method != "tpm" {
		return fmt.Errorf("runtime: config.toml provisions by %s/%s, want dps/tpm", p.Source, p.Method)
	}
	uri, err := tpm.TCTIURI(p.TCTI)
	if err != nil {
		return fmt.Errorf("runtime: %w", err)
	}
	var tc tpm.Config
	if p.AuthKeyIndex != nil {
		tc.AuthKeyHandle = tpm2.TPMHandle(0x81000000 + *p.AuthKeyIndex)
	}
	t, err := tpm.Open(uri, tc)
	if err != nil {
		return fmt.Errorf("runtime: %w", err)
	}
	defer t.Close()
	id, err := t.Identity(ctx)
	if err != nil {
		return fmt.Errorf("runtime: %w", err)
	}
	c := &dps.Client{IDScope: p.IDScope, Endpoint: p.GlobalEndpoint, HTTP: dps.NewHTTPClient(l.ca.Pool()), Log: l.log.With().Str("part", "runtime").Logger()}
	res, err := c.Register(ctx, t, dps.Request{RegistrationID: p.RegistrationID, EndorsementKey: id.EndorsementKey, StorageRootKey: id.StorageRootKey})
	if err != nil {
		return fmt.Errorf("runtime: %w", err)
	}
	if res.DeviceID != l.identity.DeviceID || res.AssignedHub != l.identity.AssignedHub {
		return fmt.Errorf("runtime: DPS assigned %s on %s, the provisioner %s on %s", res.DeviceID, res.AssignedHub, l.identity.DeviceID, l.identity.AssignedHub)
	}
	// The module registry calls are signed with the device's key, in the
	// TPM, as aziot-identityd signs them.
	hc := tlsconfig.HTTPClient(l.ca.Pool(), 30*time.Second)
	defer hc.CloseIdleConnections()
	device := &hubservice.Client{Device: &hubservice.Device{HubHostName: res.AssignedHub, DeviceID: res.DeviceID, Signer: t}, Endpoint: hub.Service, HTTP: hc}
	mod, err := CreateModule(ctx, device, ModuleID)
	if err != nil {
		return fmt.Errorf("runtime: %w", err)
	}
	l.printf("runtime", "config.toml read; registered with DPS through the TPM as %s on %s; module identity %s created with the device's credentials; in %v", res.DeviceID, res.AssignedHub, ModuleID, since(start))

	// The workload socket: under the system's temporary folder, since a
	// socket path must stay under 108 bytes.
	sockDir, err := os.MkdirTemp("", "edgetpm-lab-")
	if err != nil {
		return err
	}
	l.onClose(func() error { return os.RemoveAll(sockDir) })
	// The relay's user in its container must reach the socket (0666).
	if err := os.Chmod(sockDir, 0o755); err != nil {
		return err
	}
	socket := filepath.Join(sockDir, "workload.sock")
	wl, err := StartWorkload(socket, l.ca, []ModuleIdentity{mod}, l.log.With().Str("part", "workload").Logger())
	if err != nil {
		return err
	}
	l.onClose(wl.Close)
	l.printf("workload", "workload API for %s's modules at unix://%s", res.DeviceID, socket)

	dataDir := l.path("relay-data")
	metricsAddr, err := freeAddr()
	if err != nil {
		return err
	}
	var launch launcher
	workloadURI := "unix://" + socket
	if l.cfg.Containerd != "" {
		cl, err := newContainerdLauncher(l.cfg.Containerd, l.cfg.Namespace, l.relayImage, l.stateDir)
		if err != nil {
			return err
		}
		l.onClose(cl.close)
		launch = cl
		workloadURI = "unix://" + containerSocket
		dataDir = l.path("relay-volume")
	} else {
		launch = processLauncher{bin: b.relay}
	}
	if err := prepareDataDir(dataDir, l.cfg.Containerd != ""); err != nil {
		return err
	}
	spec := moduleSpec{
		env: []string{
			"IOTEDGE_WORKLOADURI=" + workloadURI,
			"IOTEDGE_MODULEID=" + ModuleID,
			"IOTEDGE_DEVICEID=" + res.DeviceID,
			"IOTEDGE_IOTHUBHOSTNAME=" + res.AssignedHub,
			"IOTEDGE_GATEWAYHOSTNAME=" + p.Hostname,
			"IOTEDGE_MODULEGENERATIONID=" + mod.GenerationID,
			"IOTEDGE_APIVERSION=2022-08-03",
			"IOTEDGE_AUTHSCHEME=sasToken",
			// edgeHub listens on the gateway's port 8883; the lab's is a
			// free loopback port.
			"EDGE_RELAY_HUB_ADDRESS=" + hub.MQTT,
		},
		args:    []string{"--metrics-addr", metricsAddr},
		socket:  socket,
		dataDir: dataDir,
		logFile: l.path("logs", "relay.log"),
	}
	rctx, cancel := context.WithCancel(context.Background())
	rt := &runtime{launch: launch, spec: spec, metricsAddr: metricsAddr, cancel: cancel, done: make(chan struct{})}
	started := make(chan struct{}, 1)
	go rt.supervise(rctx, l, started)
	l.onClose(rt.stop)
	l.runtime = rt
	select {
	case <-started:
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(time.Minute):
		return fmt.Errorf("relay: not started after a minute; see %s", l.path("logs", "lab.log"))
	}
	l.printf("relay", "edge-relay running %s, metrics at http://%s/metrics", launch, metricsAddr)
	return nil
}

// supervise runs the module, again after each exit, with edgeAgent's
// growing delay, until ctx ends.
func (rt *runtime) supervise(ctx context.Context, l *Lab, started chan<- struct{}) {
	defer close(rt.done)
	var b backoff.Backoff
	for {
		begin := time.Now()
		err := rt.launch.run(ctx, rt.spec, func() {
			rt.mu.Lock()
			rt.count++
			rt.mu.Unlock()
			select {
			case started <- struct{}{}:
			default:
			}
		})
		if ctx.Err() != nil {
			return
		}
		if time.Since(begin) > time.Minute {
			b.Reset()
		}
		delay := b.Next()
		l.printf("relay", "edge-relay ended (%v); restarting in %v", err, delay.Round(time.Millisecond))
		if backoff.Sleep(ctx, delay) != nil {
			return
		}
	}
}

func (rt *runtime) stop() error {
	rt.cancel()
	<-rt.done
	return nil
}

// restarts is how many times the module was started again.
func (rt *runtime) restarts() int {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	return max(rt.count-1, 0)
}

// metrics scrapes the relay's counters, summed over their labels.
func (rt *runtime) metrics(ctx context.Context) (map[string]int64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+rt.metricsAddr+"/metrics", nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("metrics: %s", resp.Status)
	}
	out := map[string]int64{}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		name, value, ok := strings.Cut(line, " ")
		if !ok {
			continue
		}
		name, _, _ = strings.Cut(name, "{")
		if v, err := strconv.ParseFloat(value, 64); err == nil {
			out[name] += int64(v)
		}
	}
	return out, sc.Err()
}

// freeAddr is a free loopback address.
func freeAddr() (string, error) {
	port, err := daemon.FreePorts(1)
	if err != nil {
		return "", err
	}
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), nil
}
