package edgeconfig

import (
	"errors"
	"slices"
	"strings"
	"testing"
)

// minimal is the smallest config aziot accepts for DPS with a TPM
// (docs/edge-protocol.md#host-provisioning-file).
const minimal = `[provisioning]
source = "dps"
id_scope = "0ne00ABCDEF"

[provisioning.attestation]
method = "tpm"
registration_id = "r"
`

var validateTests = []struct {
	name, in string
	problems []string // keys with a problem, sorted
}{
	{"minimal", minimal, nil},
	{"example of §7.3", `hostname = "edge1-host"
auto_reprovisioning_mode = "Dynamic"

[provisioning]
source = "dps"
global_endpoint = "https://global.azure-devices-provisioning.net"
id_scope = "0ne00ABCDEF"

[provisioning.attestation]
method = "tpm"
registration_id = "3f2a"

[tpm]
tcti = "device"
auth_key_index = 0x00_01_00

[tpm.hierarchy_authorization]
endorsement = ""
owner = ""

[agent]
name = "edgeAgent"
type = "docker"
imagePullPolicy = "on-create"

[agent.config]
image = "mcr.microsoft.com/azureiotedge-agent:1.5"
createOptions = { HostConfig = { Binds = ["/iotedge/storage:/iotedge/storage"] } }

[agent.env]
"storageFolder" = "/iotedge/storage"

[edge_ca]
auto_generated_edge_ca_expiry_days = 90
`, nil},
	{"manual by connection string", "[provisioning]\nsource = \"manual\"\nconnection_string = \"HostName=h;DeviceId=d;SharedAccessKey=k\"\n", nil},
	{"manual without device", "[provisioning]\nsource = \"manual\"\niothub_hostname = \"h\"\n", []string{"provisioning.device_id"}},
	{"source none", "[provisioning]\nsource = \"none\"\n", nil},
	{"empty", "", []string{"provisioning.source"}},
	{"no source", "[provisioning]\nid_scope = \"s\"\n", []string{"provisioning.source"}},
	{"provisioning not a table", "provisioning = \"dps\"\n", []string{"provisioning"}},
	{"unknown source", "[provisioning]\nsource = \"DPS\"\n", []string{"provisioning.source"}},
	{"dps without anything", "[provisioning]\nsource = \"dps\"\n", []string{"provisioning.attestation", "provisioning.id_scope"}},
	{"dps, empty scope, bad endpoint", "[provisioning]\nsource = \"dps\"\nid_scope = \"\"\nglobal_endpoint = \"global.azure-devices-provisioning.net\"\n[provisioning.attestation]\nmethod = \"x509\"\n",
		[]string{"provisioning.global_endpoint", "provisioning.id_scope"}},
	{"dps over plain http", strings.Replace(minimal, `id_scope`, `global_endpoint = "http://dps.local:8443/"`+"\nid_scope", 1), []string{"provisioning.global_endpoint"}},
	{"unknown method", strings.Replace(minimal, `"tpm"`, `"psk"`, 1), []string{"provisioning.attestation.method"}},
	{"tpm without registration id", strings.Replace(minimal, `registration_id = "r"`, ``, 1), []string{"provisioning.attestation.registration_id"}},
	{"payload", strings.Replace(minimal, `id_scope`, `payload = { uri = "file:///p.json" }`+"\nid_scope", 1), nil},
	{"payload not a file", strings.Replace(minimal, `id_scope`, `payload = { uri = "https://x/p.json" }`+"\nid_scope", 1), []string{"provisioning.payload.uri"}},
	{"payload a string", strings.Replace(minimal, `id_scope`, `payload = "file:///p.json"`+"\nid_scope", 1), []string{"provisioning.payload"}},
	{"quoted auth key index", minimal + "[tpm]\nauth_key_index = \"0x00_01_00\"\n", []string{"tpm.auth_key_index"}},
	{"auth key index too big", minimal + "[tpm]\nauth_key_index = 0x80_00_00\n", []string{"tpm.auth_key_index"}},
	{"auth key index negative", minimal + "[tpm]\nauth_key_index = -1\n", []string{"tpm.auth_key_index"}},
	{"largest auth key index", minimal + "[tpm]\ntcti = \"\"\nauth_key_index = 0x7F_FF_FF\n", nil},
	{"tpm fields", minimal + "[tpm]\ntcti = 1\n[tpm.hierarchy_authorization]\nendorsement = true\nowner = [\"x\"]\n",
		[]string{"tpm.hierarchy_authorization.endorsement", "tpm.hierarchy_authorization.owner", "tpm.tcti"}},
	{"top-level types", "hostname = 7\nauto_reprovisioning_mode = \"dynamic\"\ncloud_timeout_sec = 10\ncloud_retries = -1\nallow_elevated_docker_permissions = \"yes\"\nprefer_module_identity_cache = 1\ntrust_bundle_cert = false\n" + minimal,
		[]string{"allow_elevated_docker_permissions", "auto_reprovisioning_mode", "cloud_retries", "cloud_timeout_sec", "hostname", "prefer_module_identity_cache", "trust_bundle_cert"}},
	{"quoted timeout", "cloud_timeout_sec = \"120\"\n" + minimal, []string{"cloud_timeout_sec"}},
	{"good top-level", "cloud_timeout_sec = 70\ncloud_retries = 0\nallow_elevated_docker_permissions = true\n" + minimal, nil},
	{"agent incomplete", minimal + "[agent]\nname = \"edgeAgent\"\nimagePullPolicy = \"always\"\n",
		[]string{"agent.config", "agent.imagePullPolicy", "agent.type"}},
	{"agent without image", minimal + "[agent]\nname = \"edgeAgent\"\ntype = \"docker\"\n[agent.config]\ncreateOptions = {}\n[agent.env]\nLevel = 3\n",
		[]string{"agent.config.image", "agent.env.Level"}},
	{"watchdog infinite", minimal + "[watchdog]\nmax_retries = \"infinite\"\n", nil},
	{"watchdog count", minimal + "[watchdog]\nmax_retries = 3\n", nil},
	{"watchdog zero", minimal + "[watchdog]\nmax_retries = 0\n", []string{"watchdog.max_retries"}},
	{"watchdog forever", minimal + "[watchdog]\nmax_retries = \"forever\"\n", []string{"watchdog.max_retries"}},
}

func TestValidate(t *testing.T) {
	for _, tc := range validateTests {
		err := Validate([]byte(tc.in))
		var got []string
		var ve *ValidationError
		if errors.As(err, &ve) {
			for _, p := range ve.Problems {
				got = append(got, p.Key)
			}
		} else if err != nil {
			t.Errorf("%s: Validate(%q) = %v, want a *ValidationError", tc.name, tc.in, err)
			continue
		}
		if !slices.Equal(got, tc.problems) {
			t.Errorf("%s: Validate(%q) = %v, want problems with %q", tc.name, tc.in, err, tc.problems)
		}
	}
}

func TestValidateMessages(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{minimal + "[tpm]\nauth_key_index = \"0x00_01_00\"\n", `tpm.auth_key_index: must be a TOML integer, not a string; write auth_key_index = 0x00_01_00`},
		{minimal + "[tpm]\nauth_key_index = \"first\"\n", `tpm.auth_key_index: must be a TOML integer, not a string`},
		{"cloud_timeout_sec = 10\n", `2 problems: cloud_timeout_sec: must be an integer of at least 70 (seconds); provisioning.source: required`},
		{strings.Replace(minimal, `id_scope`, `global_endpoint = "http://dps.local"`+"\nid_scope", 1), `provisioning.global_endpoint: DPS endpoint "http://dps.local" is not https: plain http would carry the TPM-signed registration token in clear and let anyone on the path assign the device to a hub of their choosing`},
		{"auto_reprovisioning_mode = \"dynamic\"\n" + minimal, `auto_reprovisioning_mode: "dynamic" is not one of "Dynamic", "AlwaysOnStartup", "OnErrorOnly"`},
	} {
		if err := Validate([]byte(tc.in)); err == nil || err.Error() != tc.want {
			t.Errorf("Validate(%q) = %v, want %s", tc.in, err, tc.want)
		}
	}
	in := "[provisioning]\nsource = \"dps\"\nid_scope = \"s\"\nx = [1,\n"
	var pe *ParseError
	if err := Validate([]byte(in)); !errors.As(err, &pe) || pe.Line != 4 {
		t.Errorf("Validate(%q) = %#v, want a *ParseError on line 4", in, err)
	}
}
