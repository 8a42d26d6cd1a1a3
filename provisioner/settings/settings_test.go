package settings

import (
	"errors"
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/edgetpm/edgetpm/provisioner/dps"
)

// load runs a Loader over a file with the given content (none when
// empty), an environment and flags.
func load(t *testing.T, file string, env map[string]string, args ...string) (*Settings, error) {
	t.Helper()
	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	l := NewLoader(fs, TPMGroup|DPSGroup|AziotGroup|ContainerdGroup|ProvisionGroup|StateGroup)
	if file != "" {
		path := filepath.Join(t.TempDir(), "config.toml")
		if err := os.WriteFile(path, []byte(file), 0o600); err != nil {
			t.Fatal(err)
		}
		args = append([]string{"--config", path}, args...)
	}
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if env == nil {
		env = map[string]string{}
	}
	if _, ok := env[EnvConfig]; !ok {
		// Never read the machine's own settings.
		empty := filepath.Join(t.TempDir(), "empty.toml")
		if err := os.WriteFile(empty, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		env[EnvConfig] = empty
	}
	return l.Load(func(k string) string { return env[k] })
}

func TestDefaults(t *testing.T) {
	s, err := load(t, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	want := Defaults()
	want.TPM.EndorsementAuth, want.TPM.OwnerAuth = []byte{}, []byte{}
	if !reflect.DeepEqual(*s, want) {
		t.Errorf("Load() = %+v, want the defaults %+v", *s, want)
	}
}

const fileText = `state = "/srv/state.json"

[dps]
id_scope = "0ne00FILE"
endpoint = "https://file.example/"
timeout = "90s"
register = false

[tpm]
uri = "mssim://127.0.0.1:2321"
auth_key_index = 0x0102

[aziot]
config = "/srv/aziot.toml"
apply = false

[images]
files = ["/a.tar", "/b.tar.gz"]
containerd_namespace = "k8s.io"

[health]
timeout = "2m"
modules = ["edgeAgent"]
`

func TestPrecedence(t *testing.T) {
	for _, tc := range []struct {
		name  string
		env   map[string]string
		args  []string
		check func(*Settings) string
	}{
		{"file", nil, nil, func(s *Settings) string {
			if s.DPS.IDScope != "0ne00FILE" || s.DPS.Endpoint != "https://file.example/" || s.DPS.Timeout != Duration(90*time.Second) ||
				s.DPS.Register || s.TPM.URI != "mssim://127.0.0.1:2321" || s.TPM.AuthKeyIndex != 0x102 || s.Aziot.Config != "/srv/aziot.toml" ||
				s.Aziot.Apply || !reflect.DeepEqual(s.Images.Files, []string{"/a.tar", "/b.tar.gz"}) || s.Images.ContainerdNamespace != "k8s.io" ||
				s.Health.Timeout != Duration(2*time.Minute) || !reflect.DeepEqual(s.Health.Modules, []string{"edgeAgent"}) || s.State != "/srv/state.json" {
				return "file values not all taken"
			}
			if s.Images.ContainerdAddress != Defaults().Images.ContainerdAddress || !s.Health.Wait {
				return "defaults the file does not name were lost"
			}
			return ""
		}},
		{"env over file", map[string]string{"EDGE_DPS_ID_SCOPE": "0ne00ENV", "EDGE_DPS_REGISTER": "true", "EDGE_IMAGES": "/c.tar, /d.tar", "EDGE_HEALTH_WAIT": "false", "EDGE_TPM_AUTH_KEY_INDEX": "7"}, nil, func(s *Settings) string {
			if s.DPS.IDScope != "0ne00ENV" || !s.DPS.Register || !reflect.DeepEqual(s.Images.Files, []string{"/c.tar", "/d.tar"}) || s.Health.Wait || s.TPM.AuthKeyIndex != 7 {
				return "environment did not override the file"
			}
			return ""
		}},
		{"flags over env", map[string]string{"EDGE_DPS_ID_SCOPE": "0ne00ENV", "EDGE_IMAGES": "/c.tar"},
			[]string{"--id-scope", "0ne00FLAG", "--image", "/e.tar", "--image", "/f.tar", "--no-wait", "--skip-register", "--wait-for", "edgeHub,relay", "--timeout", "3s"},
			func(s *Settings) string {
				if s.DPS.IDScope != "0ne00FLAG" || !reflect.DeepEqual(s.Images.Files, []string{"/e.tar", "/f.tar"}) || s.Health.Wait || s.DPS.Register ||
					!reflect.DeepEqual(s.Health.Modules, []string{"edgeHub", "relay"}) || s.DPS.Timeout != Duration(3*time.Second) {
					return "flags did not override"
				}
				return ""
			}},
		{"bool flag false", nil, []string{"--no-apply=false"}, func(s *Settings) string {
			if !s.Aziot.Apply {
				return "--no-apply=false should apply"
			}
			return ""
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := load(t, fileText, tc.env, tc.args...)
			if err != nil {
				t.Fatal(err)
			}
			if msg := tc.check(s); msg != "" {
				t.Errorf("%s: got %+v", msg, *s)
			}
		})
	}
}

func TestFileErrors(t *testing.T) {
	for _, tc := range []struct {
		file string
		want []string // each must appear
	}{
		{"[dps]\nid_scope = \"x\"\nid_scop = \"y\"\n", []string{":3:1: unknown key \"dps.id_scop\""}},
		{"stat = 1\n[tpm]\n  uri2 = \"x\"\n", []string{":1:1: unknown key \"stat\"", ":3:3: unknown key \"tpm.uri2\""}},
		{"[dps]\ntimeout = \"soon\"\n", []string{":2:", "duration"}},
		{"[tpm]\nauth_key_index = \"0x100\"\n", []string{":2:"}},
		{"[dps\n", []string{":1:"}},
		{"[health]\nmodules = \"edgeHub\"\n", []string{":2:"}},
	} {
		_, err := load(t, tc.file, nil)
		if err == nil {
			t.Errorf("Load(%q) = nil error, want %q", tc.file, tc.want)
			continue
		}
		var fe *FileError
		if !errors.As(err, &fe) || !strings.HasSuffix(fe.Path, "config.toml") {
			t.Errorf("Load(%q) = %v, want a *FileError naming the file", tc.file, err)
		}
		for _, w := range tc.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("Load(%q) = %v, want it to contain %q", tc.file, err, w)
			}
		}
	}
}

func TestInvalid(t *testing.T) {
	for _, tc := range []struct {
		args []string
		env  map[string]string
		want string
	}{
		{[]string{"--endpoint", "ftp://x"}, nil, "dps.endpoint"},
		{[]string{"--auto-reprovisioning-mode", "Sometimes"}, nil, "aziot.auto_reprovisioning_mode"},
		{[]string{"--containerd-namespace", ""}, nil, "images.containerd_namespace"},
		{nil, map[string]string{"EDGE_TPM_AUTH_KEY_INDEX": "0x800000"}, "EDGE_TPM_AUTH_KEY_INDEX"},
		{nil, map[string]string{"EDGE_HEALTH_WAIT": "maybe"}, "EDGE_HEALTH_WAIT"},
		{nil, map[string]string{EnvConfig: "/nonexistent/edge.toml"}, "read settings"},
	} {
		_, err := load(t, "", tc.env, tc.args...)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Load(%q, %v) = %v, want an error about %s", tc.args, tc.env, err, tc.want)
		}
	}
	// Bad flag values are refused while parsing, as usage errors.
	for _, args := range [][]string{{"--auth-key-index", "0x800000"}, {"--timeout", "soon"}, {"--no-wait=maybe"}} {
		fs := flag.NewFlagSet("test", flag.ContinueOnError)
		fs.SetOutput(new(strings.Builder))
		NewLoader(fs, TPMGroup|DPSGroup|ProvisionGroup)
		if err := fs.Parse(args); err == nil {
			t.Errorf("Parse(%q) = nil, want an error", args)
		}
	}
}

func TestPasswords(t *testing.T) {
	dir := t.TempDir()
	fileE, fileO := filepath.Join(dir, "e"), filepath.Join(dir, "o")
	os.WriteFile(fileE, []byte("from-file-e\n"), 0o600)
	os.WriteFile(fileO, []byte("from-file-o\r\n"), 0o600)
	conf := "[tpm]\nendorsement_password_file = \"" + fileE + "\"\nowner_password_file = \"" + fileO + "\"\n"
	for _, tc := range []struct {
		name string
		file string
		env  map[string]string
		args []string
		e, o string
	}{
		{"none", "", nil, nil, "", ""},
		{"file", conf, nil, nil, "from-file-e", "from-file-o"},
		{"env over file", conf, map[string]string{EnvEndorsementAuth: "env-e"}, nil, "env-e", "from-file-o"},
		{"flag over env", "", map[string]string{EnvEndorsementAuth: "env-e", EnvOwnerAuth: "env-o"}, []string{"--owner-auth-file", fileO}, "env-e", "from-file-o"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := load(t, tc.file, tc.env, tc.args...)
			if err != nil {
				t.Fatal(err)
			}
			if string(s.TPM.EndorsementAuth) != tc.e || string(s.TPM.OwnerAuth) != tc.o {
				t.Errorf("passwords = %q, %q; want %q, %q", s.TPM.EndorsementAuth, s.TPM.OwnerAuth, tc.e, tc.o)
			}
		})
	}
	if _, err := load(t, "", nil, "--owner-auth-file", filepath.Join(dir, "missing")); err == nil || !strings.Contains(err.Error(), "tpm.owner_password_file: ") {
		t.Errorf("Load(a missing owner password file) = %v, want an error naming tpm.owner_password_file", err)
	}
	if _, err := load(t, "[tpm]\nendorsement_password_file = \"/nonexistent/e\"\n", nil); err == nil || !strings.Contains(err.Error(), "tpm.endorsement_password_file: ") {
		t.Errorf("Load(a missing endorsement password file) = %v, want an error naming tpm.endorsement_password_file", err)
	}
}

func TestAziotTCTI(t *testing.T) {
	for _, tc := range []struct {
		tpm  TPM
		want string
		err  bool
	}{
		{TPM{URI: "device:/dev/tpmrm0"}, "device:/dev/tpmrm0", false},
		{TPM{URI: "mssim://127.0.0.1:2321"}, "mssim:host=127.0.0.1,port=2321", false},
		{TPM{URI: "mssim://[::1]:2321"}, "mssim:host=::1,port=2321", false},
		{TPM{URI: "swtpm://127.0.0.1:2321"}, "swtpm:host=127.0.0.1,port=2321", false},
		{TPM{URI: "other", TCTI: "swtpm:port=2321"}, "swtpm:port=2321", false},
		{TPM{URI: "other"}, "", true},
		{TPM{URI: "mssim://host"}, "", true},
	} {
		got, err := tc.tpm.AziotTCTI()
		if got != tc.want || (err != nil) != tc.err {
			t.Errorf("AziotTCTI(%+v) = %q, %v; want %q, error %v", tc.tpm, got, err, tc.want, tc.err)
		}
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte(fileText))
	f.Add([]byte("[dps]\nid_scop = 1\n"))
	f.Add([]byte("[tpm]\nauth_key_index = 0x800000\n"))
	f.Add([]byte("[dps]\ntimeout = 5\n"))
	f.Add([]byte("dps = { timeout = 300, register = \"yes\" }\n[health]\nmodules = [\"a\", 1]\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		s := Defaults()
		if err := Parse("f.toml", data, &s); err != nil {
			if err.Error() == "" {
				t.Fatal("empty error")
			}
			return
		}
		_ = s.Validate()
	})
}

// A plain http DPS endpoint is refused, with the reason, wherever it
// comes from.
func TestEndpointMustBeHTTPS(t *testing.T) {
	for _, tc := range []struct {
		name string
		file string
		env  map[string]string
		args []string
	}{
		{name: "file", file: "[dps]\nendpoint = \"http://dps.local:8443\"\n"},
		{name: "environment", env: map[string]string{"EDGE_DPS_ENDPOINT": "http://dps.local:8443"}},
		{name: "flag", args: []string{"--endpoint", "http://dps.local:8443"}},
		{name: "upper case", args: []string{"--endpoint", "HTTP://dps.local:8443"}},
	} {
		_, err := load(t, tc.file, tc.env, tc.args...)
		if !errors.Is(err, dps.ErrInsecureEndpoint) || !strings.Contains(err.Error(), "dps.endpoint") || !strings.Contains(err.Error(), "in clear") {
			t.Errorf("%s: Load = %v, want dps.endpoint refused as plain http", tc.name, err)
		}
	}
	if _, err := load(t, "[dps]\nendpoint = \"https://dps.local:8443\"\n", nil); err != nil {
		t.Errorf("Load with an https endpoint = %v", err)
	}
}

// Every mistake in the file is named by its key as written, at its file,
// line and column, with the form wanted; never by Go's names for it.
func TestFileErrorsNameTheKey(t *testing.T) {
	for _, tc := range []struct {
		file string
		want []string // each must appear
	}{
		// A bare number is not taken as nanoseconds.
		{"[dps]\ntimeout = 5\n", []string{"config.toml:2:11: dps.timeout: want a duration such as \"300s\", not 5"}},
		{"[health]\ntimeout = 1.5\n", []string{":2:11: health.timeout: want a duration such as \"300s\", not 1.5"}},
		{"[dps]\ntimeout = \"soon\"\n", []string{":2:11: dps.timeout: want a duration such as \"300s\", not \"soon\""}},
		{"dps.timeout = 300\n", []string{":1:15: dps.timeout: want a duration"}},
		{"dps = { timeout = 300 }\n", []string{":1:19: dps.timeout: want a duration"}},
		{"[tpm]\nauth_key_index = \"0x100\"\n", []string{":2:18: tpm.auth_key_index: want a whole number", `not "0x100"`}},
		{"[tpm]\nauth_key_index = -1\n", []string{":2:18: tpm.auth_key_index: want a whole number"}},
		{"[health]\nmodules = \"edgeHub\"\n", []string{":2:11: health.modules: want a list of strings such as [\"a\", \"b\"]"}},
		{"[health]\nmodules = [\"edgeHub\", 1]\n", []string{":2:11: health.modules: want a list of strings"}},
		{"[dps]\nregister = \"yes\"\n", []string{":2:12: dps.register: want true or false, not \"yes\""}},
		{"[dps]\nid_scope = 0x1\n", []string{":2:12: dps.id_scope: want a quoted string, not 0x1"}},
		{"dps = 3\n", []string{":1:7: dps: want a table [dps], not 3"}},
		{"state = 1\n[dps]\ntimeout = 5\n", []string{":1:9: state: want a quoted string", ":3:11: dps.timeout"}},
		// Unknown keys say what the table takes.
		{"[dps]\nid_scop = \"x\"\n", []string{":2:1: unknown key \"dps.id_scop\"", "id_scope"}},
		// Bad values the file gave are at their place in it too.
		{"[dps]\ntimeout = \"0s\"\n", []string{"config.toml:2:11: dps.timeout: must be positive"}},
		{"[tpm]\nauth_key_index = 0x800000\n", []string{"config.toml:2:18: tpm.auth_key_index: 0x800000 is above 0x7fffff"}},
		{"[aziot]\nauto_reprovisioning_mode = \"Sometimes\"\n", []string{"config.toml:2:28: aziot.auto_reprovisioning_mode:"}},
	} {
		_, err := load(t, tc.file, nil)
		if err == nil {
			t.Errorf("Load(%q) = nil error, want %q", tc.file, tc.want)
			continue
		}
		for _, w := range tc.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("Load(%q) = %v\nwant it to contain %q", tc.file, err, w)
			}
		}
		for _, goName := range []string{"settings.", "uint32", "[]string", "struct field", "toml: "} {
			if strings.Contains(err.Error(), goName) {
				t.Errorf("Load(%q) = %v, names Go's %q", tc.file, err, goName)
			}
		}
	}
}

// A bad value from the environment or a flag names where it came from,
// not the file.
func TestInvalidNamesItsSource(t *testing.T) {
	_, err := load(t, "[dps]\ntimeout = \"1m\"\n", map[string]string{"EDGE_DPS_TIMEOUT": "0s"})
	if err == nil || !strings.Contains(err.Error(), "$EDGE_DPS_TIMEOUT: dps.timeout: must be positive") || strings.Contains(err.Error(), "config.toml:") {
		t.Errorf("Load(bad value in the environment) = %v", err)
	}
	_, err = load(t, "[dps]\ntimeout = \"1m\"\n", nil, "--timeout", "0s")
	if err == nil || !strings.Contains(err.Error(), "--timeout: dps.timeout: must be positive") {
		t.Errorf("Load(bad value in a flag) = %v", err)
	}
}
