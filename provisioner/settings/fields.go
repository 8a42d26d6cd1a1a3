package settings

import (
	"flag"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Group selects which settings a command offers as flags.
type Group int

const (
	// TPMGroup is the TPM's URI, auth key index and hierarchy passwords.
	TPMGroup Group = 1 << iota
	// DPSGroup is the registration: ID scope, endpoint, payload, CA.
	DPSGroup
	// AziotGroup is the runtime's config.toml and applying it.
	AziotGroup
	// ContainerdGroup is where images are loaded and containers run.
	ContainerdGroup
	// ProvisionGroup is what only the whole provisioning flow uses: image
	// files, health waiting, skipping steps.
	ProvisionGroup
	// StateGroup is the DPS assignment file.
	StateGroup
)

// field is one setting's key in the file, its environment variable (none
// when empty) and its flag.
type field struct {
	key, env, flag, usage string
	group                 Group
	value                 flag.Value
	// inverted marks a --no-X flag for the setting X, whose file key and
	// variable say X itself (true or false).
	inverted bool
}

func (s *Settings) fields() []field {
	return []field{
		{"dps.id_scope", "EDGE_DPS_ID_SCOPE", "id-scope", "DPS ID `SCOPE`, e.g. 0ne00000000", DPSGroup, (*stringValue)(&s.DPS.IDScope), false},
		{"dps.endpoint", "EDGE_DPS_ENDPOINT", "endpoint", "DPS device endpoint `URL`", DPSGroup, (*stringValue)(&s.DPS.Endpoint), false},
		{"dps.registration_id", "EDGE_DPS_REGISTRATION_ID", "registration-id", "registration `ID` enrolled in DPS (default: derived from the endorsement key)", DPSGroup, (*stringValue)(&s.DPS.RegistrationID), false},
		{"dps.payload_file", "EDGE_DPS_PAYLOAD_FILE", "payload", "send the JSON in `FILE` as the registration payload (custom allocation)", DPSGroup, (*stringValue)(&s.DPS.PayloadFile), false},
		{"dps.ca_file", "EDGE_DPS_CA_FILE", "ca-file", "also trust the CA certificates in `PEM` (private endpoints, the local lab)", DPSGroup, (*stringValue)(&s.DPS.CAFile), false},
		{"dps.timeout", "EDGE_DPS_TIMEOUT", "timeout", "give up registering after this `DURATION`, retries and polls included", DPSGroup, (*durationValue)(&s.DPS.Timeout), false},
		{"dps.register", "EDGE_DPS_REGISTER", "skip-register", "do not register with DPS; leave it to the IoT Edge runtime", ProvisionGroup, (*invertedBool)(&s.DPS.Register), true},

		{"tpm.uri", "EDGE_TPM", "tpm", "TPM `URI`: device:/dev/tpmrm0, or mssim://HOST:PORT", TPMGroup, (*stringValue)(&s.TPM.URI), false},
		{"tpm.auth_key_index", "EDGE_TPM_AUTH_KEY_INDEX", "auth-key-index", "persistent handle of the hub key, as an `INDEX` added to 0x81000000 like aziot's auth_key_index", TPMGroup, (*indexValue)(&s.TPM.AuthKeyIndex), false},
		{"tpm.tcti", "EDGE_TPM_TCTI", "tcti", "`TCTI` written for aziot-tpmd (default: derived from --tpm)", AziotGroup, (*stringValue)(&s.TPM.TCTI), false},
		// The passwords' own variables hold the password, not a file name:
		// see Load.
		{"tpm.endorsement_password_file", "", "endorsement-auth-file", "read the endorsement hierarchy password from `FILE` (or set $" + EnvEndorsementAuth + ")", TPMGroup, (*stringValue)(&s.TPM.EndorsementPasswordFile), false},
		{"tpm.owner_password_file", "", "owner-auth-file", "read the owner hierarchy password from `FILE` (or set $" + EnvOwnerAuth + ")", TPMGroup, (*stringValue)(&s.TPM.OwnerPasswordFile), false},

		{"aziot.config", "EDGE_AZIOT_CONFIG", "aziot-config", "the IoT Edge runtime's config `FILE`", AziotGroup, (*stringValue)(&s.Aziot.Config), false},
		{"aziot.hostname", "EDGE_AZIOT_HOSTNAME", "hostname", "host `NAME` written to config.toml (default: keep the file's)", AziotGroup, (*stringValue)(&s.Aziot.Hostname), false},
		{"aziot.auto_reprovisioning_mode", "EDGE_AZIOT_AUTO_REPROVISIONING_MODE", "auto-reprovisioning-mode", "`MODE`: Dynamic, AlwaysOnStartup or OnErrorOnly", AziotGroup, (*stringValue)(&s.Aziot.AutoReprovisioningMode), false},
		{"aziot.agent_image", "EDGE_AZIOT_AGENT_IMAGE", "agent-image", "edgeAgent `IMAGE`, written when config.toml has no [agent] table", AziotGroup, (*stringValue)(&s.Aziot.AgentImage), false},
		{"aziot.apply", "EDGE_AZIOT_APPLY", "no-apply", "write config.toml but do not run 'iotedge config apply'", ProvisionGroup, (*invertedBool)(&s.Aziot.Apply), true},

		{"images.files", "EDGE_IMAGES", "image", "side-load the image archive `FILE` (repeatable; the variable takes a comma-separated list)", ProvisionGroup, &listValue{list: &s.Images.Files}, false},
		{"images.containerd_address", "EDGE_CONTAINERD_ADDRESS", "containerd-address", "containerd's socket `PATH`", ContainerdGroup, (*stringValue)(&s.Images.ContainerdAddress), false},
		{"images.containerd_namespace", "EDGE_CONTAINERD_NAMESPACE", "containerd-namespace", "containerd `NAMESPACE` the runtime uses (Docker's is moby)", ContainerdGroup, (*stringValue)(&s.Images.ContainerdNamespace), false},
		{"images.docker_socket", "EDGE_DOCKER_SOCKET", "docker-socket", "Docker's socket `PATH`, to load through Docker when it keeps images in its classic store (empty: never)", ContainerdGroup, (*stringValue)(&s.Images.DockerSocket), false},

		{"health.wait", "EDGE_HEALTH_WAIT", "no-wait", "do not wait for the runtime's modules to run", ProvisionGroup, (*invertedBool)(&s.Health.Wait), true},
		{"health.timeout", "EDGE_HEALTH_TIMEOUT", "wait-timeout", "how long to wait for the runtime's modules, as a `DURATION`", ProvisionGroup, (*durationValue)(&s.Health.Timeout), false},
		{"health.modules", "EDGE_HEALTH_MODULES", "wait-for", "comma-separated `MODULES` that must be running", ProvisionGroup, &listValue{list: &s.Health.Modules, comma: true}, false},

		{"state", "EDGE_PROVISIONER_STATE", "state", "the DPS assignment `FILE`", StateGroup, (*stringValue)(&s.State), false},
	}
}

type stringValue string

func (v *stringValue) Set(s string) error { *v = stringValue(s); return nil }
func (v *stringValue) String() string     { return string(*v) }

type durationValue Duration

func (v *durationValue) Set(s string) error {
	d, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("want a duration such as 90s or 5m")
	}
	*v = durationValue(d)
	return nil
}
func (v *durationValue) String() string { return time.Duration(*v).String() }

type indexValue uint32

func (v *indexValue) Set(s string) error {
	n, err := strconv.ParseUint(s, 0, 32)
	if err != nil || n > 0x7FFFFF {
		return fmt.Errorf("want a number from 0 to 0x7fffff")
	}
	*v = indexValue(n)
	return nil
}
func (v *indexValue) String() string { return fmt.Sprintf("%#x", uint32(*v)) }

// invertedBool backs a --no-X flag for a setting X that defaults to true.
type invertedBool bool

func (v *invertedBool) Set(s string) error {
	b, err := strconv.ParseBool(s)
	if err != nil {
		return fmt.Errorf("want true or false")
	}
	*v = invertedBool(!b)
	return nil
}
func (v *invertedBool) String() string   { return strconv.FormatBool(!bool(*v)) }
func (v *invertedBool) IsBoolFlag() bool { return true }

// listValue is a list: a repeated flag appends (the first use replaces
// what the file or environment gave), a comma flag or variable replaces.
type listValue struct {
	list    *[]string
	comma   bool
	touched bool
}

func (v *listValue) Set(s string) error {
	if v.comma {
		*v.list = splitList(s)
		return nil
	}
	if !v.touched {
		*v.list = nil
		v.touched = true
	}
	*v.list = append(*v.list, s)
	return nil
}

func (v *listValue) String() string {
	if v.list == nil {
		return ""
	}
	return strings.Join(*v.list, ",")
}

func splitList(s string) []string {
	var out []string
	for p := range strings.SplitSeq(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}
