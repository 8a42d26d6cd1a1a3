// Package settings is edge-relay's configuration: defaults, then a TOML
// file (--config or $EDGE_RELAY_CONFIG), then the environment, then flags,
// each over the one before, then Validate. The connection strings and IoT
// Edge's IOTEDGE_* variables are not settings: they come from the
// environment only.
package settings

import (
	"errors"
	"flag"
	"net"
	"time"

	"github.com/edgetpm/edgetpm/internal/layered"
	"github.com/edgetpm/edgetpm/module/edgehub"
)

// EnvConfig names the settings file when --config does not.
const EnvConfig = "EDGE_RELAY_CONFIG"

// Settings is everything edge-relay can be told.
type Settings struct {
	// Data holds the queue, source state and last good configuration: a
	// volume, so they survive re-creating the container.
	Data string `toml:"data"`
	// DeviceState, when set, runs the relay as the device in this
	// assignment file, signing in the TPM.
	DeviceState string `toml:"device_state"`
	// MetricsAddr serves /metrics, /healthz and /readyz. Unset, it is
	// MetricsModule in a module container and MetricsDevice in device
	// mode (Load fills it in).
	MetricsAddr string `toml:"metrics_addr"`
	// CAFile holds CA certificates to trust in development and device
	// mode; IoT Edge gives its own.
	CAFile   string   `toml:"ca_file"`
	TokenTTL Duration `toml:"token_ttl"`
	// HubAddress is dialled instead of the hub's host name, which the
	// certificate is still checked against (the lab, where the gateway's
	// name does not resolve).
	HubAddress string `toml:"hub_address"`
	// TPM, when set, runs the relay as the device whose hub identity
	// 'edge-provisioner identity set' put in this TPM: host name and
	// device ID from its NV, tokens signed by the key at AuthKeyIndex.
	// It and DeviceState exclude each other.
	TPM string `toml:"tpm"`
	// AuthKeyIndex is the hub key's persistent handle with TPM, added to
	// 0x81000000 as edge-provisioner's auth_key_index.
	AuthKeyIndex uint32 `toml:"auth_key_index"`
}

// Duration is a time.Duration written as "90s" or "5m" in TOML.
type Duration = layered.Duration

// The metrics address when none is given. A module container listens on
// all of its interfaces: IoT Edge publishes its ports one by one, as the
// deployment says, and Azure Monitor's metrics-collector scrapes port 9600
// over the edge network. In device mode the relay runs on the host, where
// every interface would be the plant's network: loopback only.
const (
	MetricsModule = ":9600"
	MetricsDevice = "127.0.0.1:9600"
)

// DefaultAuthKeyIndex is edge-provisioner's and aziot's: the hub key at
// 0x81000100.
const DefaultAuthKeyIndex = 0x100

// Defaults are the settings before any file, environment or flag.
// MetricsAddr is empty: its default depends on the mode (see Load).
func Defaults() Settings {
	return Settings{Data: "/data", TokenTTL: Duration(edgehub.DefaultTokenTTL), AuthKeyIndex: DefaultAuthKeyIndex}
}

func (s *Settings) fields() []layered.Field {
	return []layered.Field{
		{Key: "data", Env: "EDGE_RELAY_DATA", Flag: "data", Usage: "`DIR` for the queue and the last good configuration: a volume, so they survive re-creating the container", Value: layered.StringVar(&s.Data)},
		{Key: "device_state", Env: "EDGE_RELAY_DEVICE_STATE", Flag: "device-state", Usage: "run as the device in `FILE`, the assignment edge-provisioner saved, signing in the TPM", Value: layered.StringVar(&s.DeviceState)},
		{Key: "metrics_addr", Env: "EDGE_RELAY_METRICS_ADDR", Flag: "metrics-addr", Usage: "`ADDRESS` serving /metrics, /healthz and /readyz (default " + MetricsModule + " in a module container, " + MetricsDevice + " with --device-state)", Value: layered.StringVar(&s.MetricsAddr)},
		{Key: "ca_file", Env: "EdgeModuleCACertificateFile", Flag: "ca-file", Usage: "trust the CA certificates in `PEM` (development and device mode; IoT Edge gives its own)", Value: layered.StringVar(&s.CAFile)},
		{Key: "token_ttl", Env: "EDGE_RELAY_TOKEN_TTL", Flag: "token-ttl", Usage: "`LIFETIME` of each SAS token; a new one replaces it at 80%", Value: layered.DurationVar(&s.TokenTTL)},
		{Key: "hub_address", Env: "EDGE_RELAY_HUB_ADDRESS", Flag: "hub-address", Usage: "dial `HOST:PORT` instead of the hub's host name, still checking the certificate against the name", Value: layered.StringVar(&s.HubAddress)},
		{Key: "tpm", Env: "EDGE_RELAY_TPM", Flag: "tpm", Usage: "run as the device whose hub identity 'edge-provisioner identity set' put in the TPM at `URI` (device:/dev/tpmrm0), signing there", Value: layered.StringVar(&s.TPM)},
		{Key: "auth_key_index", Env: "EDGE_RELAY_AUTH_KEY_INDEX", Flag: "auth-key-index", Usage: "with --tpm, the hub key's persistent handle as an `INDEX` added to 0x81000000", Value: layered.IndexVar(&s.AuthKeyIndex)},
	}
}

// Validate checks the settings; it names the key of each problem, all at
// once.
func (s *Settings) Validate() error {
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, layered.Invalid(key, format, args...))
	}
	if s.Data == "" {
		bad("data", "must not be empty")
	}
	if _, _, err := net.SplitHostPort(s.MetricsAddr); s.MetricsAddr != "" && err != nil {
		bad("metrics_addr", "%q: want [HOST]:PORT", s.MetricsAddr)
	}
	if time.Duration(s.TokenTTL) < time.Second {
		bad("token_ttl", "%v: want at least 1s", s.TokenTTL)
	}
	if s.TPM != "" && s.DeviceState != "" {
		bad("tpm", "device_state is set too: the identity comes from the DPS assignment or from the TPM's hub identity, not both")
	}
	if s.AuthKeyIndex > 0x7FFFFF {
		bad("auth_key_index", "%#x is above 0x7fffff", s.AuthKeyIndex)
	}
	return errors.Join(errs...)
}

// Loader binds the settings to a command's flags and, once they are
// parsed, layers defaults, the file, the environment and the flags.
type Loader struct {
	l *layered.Loader
	s Settings
}

// NewLoader registers --config and the settings' flags on fs.
func NewLoader(fs *flag.FlagSet) *Loader {
	l := &Loader{s: Defaults()}
	l.l = layered.NewLoader(fs, &l.s, layered.File{Env: EnvConfig}, l.s.fields())
	return l
}

// Load returns the validated settings, with the metrics address of the
// mode when none was given.
func (l *Loader) Load(getenv func(string) string) (*Settings, error) {
	if err := l.l.Load(getenv); err != nil {
		return nil, err
	}
	if l.s.MetricsAddr == "" {
		l.s.MetricsAddr = MetricsModule
		if l.s.DeviceState != "" || l.s.TPM != "" {
			l.s.MetricsAddr = MetricsDevice
		}
	}
	return &l.s, nil
}
