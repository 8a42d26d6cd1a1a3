// Package lab runs the whole path of edgetpm on one machine, on loopback,
// with no cloud account and no TPM chip (edge-deploy lab up): a TPM, the
// DPS and IoT Hub emulators, edge-provisioner provisioning the device by
// TPM attestation, an edge runtime stand-in that does what aziot-identityd
// and edgeAgent do, the edge-relay module, and a sample sensor publishing
// to a local MQTT broker that the relay takes its telemetry from.
//
// Every part is the real code path: the provisioner and the relay run as
// their own processes (the relay as a container when containerd is there),
// and the parts reach each other only through the wire contracts stated in
// docs/dps-protocol.md and docs/edge-protocol.md.
package lab

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/edgetpm/edgetpm/internal/emulator/hubemu"
	"github.com/edgetpm/edgetpm/internal/emulator/pki"
	"github.com/edgetpm/edgetpm/internal/hubservice"
)

// ModuleID is the relay's module identity.
const ModuleID = "relay"

// Config says how Up builds the lab.
type Config struct {
	// StateDir holds the lab's CA, emulator state, config.toml, logs and
	// the relay's queue (required).
	StateDir string
	// TPM is a TPM's URI (swtpm://HOST:PORT, mssim://HOST:PORT), "swtpm" to start
	// swtpm with its state in StateDir, or empty to serve the reference
	// simulator from this process.
	TPM string
	// Containerd is containerd's socket; empty runs the relay as a local
	// process instead of a container.
	Containerd string
	// Namespace is the containerd namespace; default DefaultNamespace.
	Namespace string
	// Bin is a folder with the edge-provisioner and edge-relay binaries.
	// Empty, they are built from the Go module at Source into
	// StateDir/bin; outside the module, the installed ones are run: those
	// beside this program, else those on PATH.
	Bin string
	// Source is the root of the edgetpm module, for the builds; default:
	// the one the current folder is in, if any.
	Source string
	// Broker is "mosquitto", "embedded" (mochi-mqtt, in this process) or
	// empty: Mosquitto when it is installed, else embedded.
	Broker string
	// Rate is the sensor's readings per second; default 10.
	Rate float64
	// Progress gets one line per part as it comes up; nil discards them.
	Progress io.Writer
	// Named also serves DPS and the hub's service API at their host names
	// on port 443, when this process may bind it (DPSConfig.Named,
	// HubConfig.Named).
	Named bool
}

// DefaultNamespace is the containerd namespace of the lab's containers.
const DefaultNamespace = "edgetpm-lab"

// Lab is a running lab. Close stops it.
type Lab struct {
	cfg      Config
	stateDir string
	ca       *pki.CA
	log      zerolog.Logger

	hub     *HubEmulator
	service *hubservice.Client // the hub's service API, as its iothubowner
	runtime *runtime
	sensor  *sensor

	identity   Summary // registration ID, assigned hub, device ID
	relayImage string  // as containerd names it

	mu      sync.Mutex
	closers []func() error // in the order they were added; Close runs them backwards
	closed  bool
}

// Summary is what the lab did, as lab up prints it.
type Summary struct {
	RegistrationID string `json:"registrationId"`
	AssignedHub    string `json:"assignedHub"`
	DeviceID       string `json:"deviceId"`
	// MessagesPublished are the sensor's readings the broker acknowledged.
	MessagesPublished int64 `json:"messagesPublished"`
	// MessagesRelayed are the messages the relay took from the broker into
	// its queue, and MessagesAcknowledged those IoT Hub acknowledged, both
	// as the relay counts them since it last started.
	MessagesRelayed      int64 `json:"messagesRelayed"`
	MessagesAcknowledged int64 `json:"messagesAcknowledged"`
	// MessagesUpstream are the sensor's readings the hub emulator holds,
	// each counted once.
	MessagesUpstream int64 `json:"messagesUpstream"`
	// TwinVersionApplied is the desired properties version the relay last
	// reported applied.
	TwinVersionApplied int64 `json:"twinVersionApplied"`
	// RelayRestarts counts the times the runtime restarted the relay.
	RelayRestarts int `json:"relayRestarts"`
}

// Up starts every part of the lab, in order, and returns once the relay
// has applied its twin and the sensor publishes. On error, what was started
// is stopped again.
func Up(ctx context.Context, cfg Config) (l *Lab, err error) {
	if cfg.StateDir == "" {
		return nil, errors.New("lab: no state folder")
	}
	if cfg.Namespace == "" {
		cfg.Namespace = DefaultNamespace
	}
	if cfg.Rate <= 0 {
		cfg.Rate = 10
	}
	if cfg.Progress == nil {
		cfg.Progress = io.Discard
	}
	stateDir, ca, err := OpenState(cfg.StateDir)
	if err != nil {
		return nil, err
	}
	// Inside the repository the binaries, and the image for containerd,
	// are built from it; outside, the installed ones are run.
	if cfg.Source == "" && (cfg.Bin == "" || cfg.Containerd != "") {
		src, err := findSource()
		if err != nil && !errors.Is(err, errNoSource) {
			return nil, err
		}
		cfg.Source = src
	}
	l = &Lab{cfg: cfg, stateDir: stateDir, ca: ca}
	started := l // the returns below set l to nil
	defer func() {
		if err != nil {
			started.Close()
		}
	}()
	if err := os.MkdirAll(l.path("logs"), 0o700); err != nil {
		return nil, err
	}
	logFile, err := os.OpenFile(l.path("logs", "lab.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	l.onClose(logFile.Close)
	l.log = zerolog.New(zerolog.ConsoleWriter{Out: logFile, NoColor: true, TimeFormat: time.RFC3339Nano}).With().Timestamp().Logger()
	l.printf("lab", "state in %s, logs in %s", stateDir, l.path("logs"))

	bins, err := l.build(ctx)
	if err != nil {
		return nil, err
	}
	tpmURI, err := l.startTPM(ctx)
	if err != nil {
		return nil, err
	}
	dps, err := l.startDPS()
	if err != nil {
		return nil, err
	}
	if err := l.enroll(ctx, tpmURI); err != nil {
		return nil, err
	}
	hub, err := l.startHub()
	if err != nil {
		return nil, err
	}
	if err := l.provision(ctx, bins, tpmURI, dps); err != nil {
		return nil, err
	}
	// The plant's broker is there before the device, and stops after it.
	brokerURL, err := l.startBroker(ctx)
	if err != nil {
		return nil, err
	}
	if err := l.startRuntime(ctx, bins, hub); err != nil {
		return nil, err
	}
	if err := l.configureRelay(ctx, brokerURL); err != nil {
		return nil, err
	}
	if err := l.startSensor(ctx, brokerURL); err != nil {
		return nil, err
	}
	return l, nil
}

// Summary reports the lab's figures now.
func (l *Lab) Summary(ctx context.Context) Summary {
	s := l.identity
	if l.service != nil {
		if r, ok, err := Reported(ctx, l.service, l.identity.DeviceID, ModuleID); err == nil && ok {
			s.TwinVersionApplied = r.AppliedVersion
		}
	}
	if l.sensor != nil {
		s.MessagesPublished = l.sensor.published()
	}
	if l.runtime != nil {
		s.RelayRestarts = l.runtime.restarts()
		if m, err := l.runtime.metrics(ctx); err == nil {
			s.MessagesRelayed = m["edgerelay_intake_messages_total"]
			s.MessagesAcknowledged = m["edgerelay_acknowledged_messages_total"]
		}
	}
	if l.hub != nil && l.sensor != nil {
		s.MessagesUpstream = s.MessagesPublished - int64(len(l.sensor.missing(l.upstream())))
	}
	return s
}

// Drain stops the sensor and waits, up to timeout, until every reading it
// published is upstream and the relay has seen each acknowledged.
func (l *Lab) Drain(ctx context.Context, timeout time.Duration) error {
	if l.sensor == nil {
		return nil
	}
	l.sensor.stop()
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for {
		missing := l.sensor.missing(l.upstream())
		m, err := l.runtime.metrics(ctx)
		if len(missing) == 0 && err == nil && m["edgerelay_acknowledged_messages_total"] >= m["edgerelay_intake_messages_total"] {
			return nil
		}
		select {
		case <-ctx.Done():
			if len(missing) > 0 {
				return fmt.Errorf("%d of the sensor's readings are not upstream after %v, the first seq %d", len(missing), timeout, missing[0])
			}
			return fmt.Errorf("the relay's queue did not drain in %v: %v", timeout, err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// upstream is what the hub holds from the relay.
func (l *Lab) upstream() []hubemu.Message {
	var out []hubemu.Message
	from := l.identity.DeviceID + "/" + ModuleID
	for _, m := range l.hub.Upstream() {
		if m.From == from {
			out = append(out, m)
		}
	}
	return out
}

// Close stops every part, the last started first, and removes its sockets.
func (l *Lab) Close() error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil
	}
	l.closed = true
	closers := slices.Clone(l.closers)
	l.mu.Unlock()
	var errs []error
	for _, c := range slices.Backward(closers) {
		if err := c(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func (l *Lab) onClose(f func() error) {
	l.mu.Lock()
	l.closers = append(l.closers, f)
	l.mu.Unlock()
}

func (l *Lab) path(elem ...string) string {
	return filepath.Join(append([]string{l.stateDir}, elem...)...)
}

// printf prints a progress line for part.
func (l *Lab) printf(part, format string, args ...any) {
	fmt.Fprintf(l.cfg.Progress, "%-10s %s\n", part, fmt.Sprintf(format, args...))
	l.log.Info().Str("part", part).Msgf(format, args...)
}
