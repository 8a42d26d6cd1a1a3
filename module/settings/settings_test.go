package settings

import (
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func load(t *testing.T, file string, env map[string]string, args ...string) (*Settings, error) {
	t.Helper()
	fs := flag.NewFlagSet("edge-relay", flag.ContinueOnError)
	fs.SetOutput(new(strings.Builder))
	l := NewLoader(fs)
	if file != "" {
		path := filepath.Join(t.TempDir(), "relay.toml")
		if err := os.WriteFile(path, []byte(file), 0o600); err != nil {
			t.Fatal(err)
		}
		args = append([]string{"--config", path}, args...)
	}
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	return l.Load(func(k string) string { return env[k] })
}

// Every variable edge-relay has read keeps working, under its flag.
func TestLayers(t *testing.T) {
	s, err := load(t, "", nil)
	want := Defaults()
	want.MetricsAddr = MetricsModule
	if err != nil || *s != want || s.Data != "/data" || s.MetricsAddr != ":9600" || time.Duration(s.TokenTTL) != time.Hour {
		t.Errorf("Load() = %+v, %v; want the defaults", s, err)
	}
	env := map[string]string{
		"EDGE_RELAY_DATA": "/env/data", "EDGE_RELAY_DEVICE_STATE": "/env/state.json", "EDGE_RELAY_METRICS_ADDR": "127.0.0.1:9700",
		"EdgeModuleCACertificateFile": "/env/ca.pem", "EDGE_RELAY_TOKEN_TTL": "10m", "EDGE_RELAY_HUB_ADDRESS": "127.0.0.1:8883",
		"EDGE_RELAY_AUTH_KEY_INDEX": "0x101",
	}
	want = Settings{"/env/data", "/env/state.json", "127.0.0.1:9700", "/env/ca.pem", Duration(10 * time.Minute), "127.0.0.1:8883", "", 0x101}
	if s, err := load(t, "data = \"/file\"\ntoken_ttl = \"2m\"\n", env); err != nil || *s != want {
		t.Errorf("Load(env over file) = %+v, %v; want %+v", s, err, want)
	}
	want = Settings{"/flag/data", "/flag/state.json", ":9800", "/flag/ca.pem", Duration(30 * time.Second), "10.0.0.1:8883", "", 0x102}
	if s, err := load(t, "", env, "--data", "/flag/data", "--device-state", "/flag/state.json", "--metrics-addr", ":9800",
		"--ca-file", "/flag/ca.pem", "--token-ttl", "30s", "--hub-address", "10.0.0.1:8883", "--auth-key-index", "0x102"); err != nil || *s != want {
		t.Errorf("Load(flags over env) = %+v, %v; want %+v", s, err, want)
	}
}

// In device mode the relay runs on the host, not in a container whose
// ports IoT Edge publishes one by one: its metrics listen on the loopback
// address unless told otherwise. In a module container they listen on
// every interface of the container, for the port IoT Edge publishes.
func TestMetricsAddrByMode(t *testing.T) {
	for _, tc := range []struct {
		name string
		env  map[string]string
		args []string
		want string
	}{
		{"module", nil, nil, ":9600"},
		{"device", nil, []string{"--device-state", "/var/lib/edge/state.json"}, "127.0.0.1:9600"},
		{"device from the environment", map[string]string{"EDGE_RELAY_DEVICE_STATE": "/s.json"}, nil, "127.0.0.1:9600"},
		{"device, told", nil, []string{"--device-state", "/s.json", "--metrics-addr", ":9600"}, ":9600"},
		{"device, told in the environment", map[string]string{"EDGE_RELAY_METRICS_ADDR": "10.0.0.5:9600"}, []string{"--device-state", "/s.json"}, "10.0.0.5:9600"},
		{"device, identity in the TPM", nil, []string{"--tpm", "device:/dev/tpmrm0"}, "127.0.0.1:9600"},
		{"device, identity in the TPM from the environment", map[string]string{"EDGE_RELAY_TPM": "device:/dev/tpmrm0"}, nil, "127.0.0.1:9600"},
	} {
		s, err := load(t, "", tc.env, tc.args...)
		if err != nil || s.MetricsAddr != tc.want {
			t.Errorf("%s: Load(%v, %q).MetricsAddr = %q, %v; want %q", tc.name, tc.env, tc.args, s.MetricsAddr, err, tc.want)
		}
	}
}

func TestInvalid(t *testing.T) {
	for _, tc := range []struct {
		file string
		env  map[string]string
		args []string
		want string
	}{
		{"", nil, []string{"--token-ttl", "500ms"}, "token_ttl: 500ms: want at least 1s"},
		{"", map[string]string{"EDGE_RELAY_TOKEN_TTL": "soon"}, nil, "EDGE_RELAY_TOKEN_TTL"},
		{"", nil, []string{"--metrics-addr", "9600"}, "metrics_addr"},
		{"", nil, []string{"--data", ""}, "data: must not be empty"},
		{"dta = \"/x\"\n", nil, nil, `relay.toml:1:1: unknown key "dta"`},
		{"", nil, []string{"--tpm", "device:/dev/tpmrm0", "--device-state", "/s.json"}, "tpm: device_state is set too"},
		{"tpm = \"device:/dev/tpmrm0\"\n", map[string]string{"EDGE_RELAY_DEVICE_STATE": "/s.json"}, nil, "tpm: device_state is set too"},
		{"", nil, []string{"--auth-key-index", "0x800000"}, "auth-key-index"},
	} {
		if _, err := load(t, tc.file, tc.env, tc.args...); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Load(%q, %v, %q) = %v, want an error with %q", tc.file, tc.env, tc.args, err, tc.want)
		}
	}
}

// A mistake in the file names the key, the file, line and column, and the
// form wanted, as edge-provisioner's settings do.
func TestFileErrorsNameTheKey(t *testing.T) {
	for file, want := range map[string]string{
		"token_ttl = 3600\n":         `relay.toml:1:13: token_ttl: want a duration such as "300s", not 3600`,
		"token_ttl = \"10ms\"\n":     "relay.toml:1:13: token_ttl: 10ms: want at least 1s",
		"data = \"/d\"\ndata_ = 1\n": `relay.toml:2:1: unknown key "data_"`,
		"data = 1\n":                 "relay.toml:1:8: data: want a quoted string, not 1",
	} {
		_, err := load(t, file, nil)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Load(%q) = %v, want an error with %q", file, err, want)
		}
	}
}
