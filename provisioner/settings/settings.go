// Package settings is edge-provisioner's configuration: defaults, then the
// file /etc/edge-provisioner/config.toml, then the environment, then flags,
// each layer overriding the one before. Hierarchy passwords come from files
// or the environment, never from the command line, where any local user
// could read them in the process list.
package settings

import (
	"errors"
	"fmt"
	"time"

	"github.com/edgetpm/edgetpm/internal/assignment"
	"github.com/edgetpm/edgetpm/internal/layered"
	"github.com/edgetpm/edgetpm/provisioner/dps"
	"github.com/edgetpm/edgetpm/provisioner/tpm"
)

// DefaultPath is where the provisioner's own configuration lives.
const DefaultPath = "/etc/edge-provisioner/config.toml"

// Settings is everything edge-provisioner can be told. The TOML keys are
// the file's; see docs/device-install.md and manifests/provisioner.toml.
type Settings struct {
	DPS    DPS    `toml:"dps"`
	TPM    TPM    `toml:"tpm"`
	Aziot  Aziot  `toml:"aziot"`
	Images Images `toml:"images"`
	Health Health `toml:"health"`
	// State is the file holding the DPS assignment (no key).
	State string `toml:"state"`
}

// DPS is how the device registers.
type DPS struct {
	IDScope        string   `toml:"id_scope"`
	Endpoint       string   `toml:"endpoint"`
	RegistrationID string   `toml:"registration_id"` // default: derived from the EK
	PayloadFile    string   `toml:"payload_file"`    // JSON sent to custom allocation
	CAFile         string   `toml:"ca_file"`         // extra trusted CAs (private endpoints, the lab)
	Timeout        Duration `toml:"timeout"`
	// Register runs the registration as a pre-flight check of the
	// enrollment; false leaves it to the IoT Edge runtime.
	Register bool `toml:"register"`
}

// TPM is where the TPM is and how to use it.
type TPM struct {
	URI          string `toml:"uri"`
	AuthKeyIndex uint32 `toml:"auth_key_index"` // added to 0x81000000, like aziot's
	// TCTI is what aziot-tpmd is told; empty derives it from URI.
	TCTI                    string `toml:"tcti"`
	EndorsementPasswordFile string `toml:"endorsement_password_file"`
	OwnerPasswordFile       string `toml:"owner_password_file"`

	// The hierarchy passwords themselves, read from the files above or the
	// environment by Load.
	EndorsementAuth []byte `toml:"-"`
	OwnerAuth       []byte `toml:"-"`
}

// Aziot is the IoT Edge runtime's config.toml and how it is applied.
type Aziot struct {
	Config                 string `toml:"config"`
	Hostname               string `toml:"hostname"` // empty keeps the file's
	AutoReprovisioningMode string `toml:"auto_reprovisioning_mode"`
	// AgentImage is edgeAgent's image, written only when config.toml has
	// no [agent] table.
	AgentImage string `toml:"agent_image"`
	Apply      bool   `toml:"apply"`
}

// Images are module image archives to side-load, and where to.
type Images struct {
	Files               []string `toml:"files"`
	ContainerdAddress   string   `toml:"containerd_address"`
	ContainerdNamespace string   `toml:"containerd_namespace"`
	DockerSocket        string   `toml:"docker_socket"` // empty: never load through Docker
}

// Health is how long to wait for which runtime modules.
type Health struct {
	Wait    bool     `toml:"wait"`
	Timeout Duration `toml:"timeout"`
	Modules []string `toml:"modules"`
}

// Defaults are the settings before any file, environment or flag.
func Defaults() Settings {
	return Settings{
		DPS: DPS{
			Endpoint: "https://global.azure-devices-provisioning.net",
			Timeout:  Duration(5 * time.Minute),
			Register: true,
		},
		TPM:   TPM{URI: "device:/dev/tpmrm0", AuthKeyIndex: 0x100},
		Aziot: Aziot{Config: "/etc/aziot/config.toml", AutoReprovisioningMode: "Dynamic", AgentImage: "mcr.microsoft.com/azureiotedge-agent:1.5", Apply: true},
		Images: Images{
			ContainerdAddress:   "/run/containerd/containerd.sock",
			ContainerdNamespace: "moby",
			DockerSocket:        "/var/run/docker.sock",
		},
		Health: Health{Wait: true, Timeout: Duration(5 * time.Minute), Modules: []string{"edgeAgent", "edgeHub"}},
		State:  assignment.DefaultPath,
	}
}

// Validate checks the settings every command relies on; it names the key
// of each problem, all at once.
func (s *Settings) Validate() error {
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, layered.Invalid(key, format, args...))
	}
	if err := dps.CheckEndpoint(s.DPS.Endpoint); err != nil {
		errs = append(errs, &layered.KeyError{Key: "dps.endpoint", Err: err})
	}
	if s.DPS.Timeout <= 0 {
		bad("dps.timeout", "must be positive")
	}
	if s.TPM.URI == "" {
		bad("tpm.uri", "must not be empty")
	}
	if s.TPM.AuthKeyIndex > 0x7FFFFF {
		bad("tpm.auth_key_index", "%#x is above 0x7fffff", s.TPM.AuthKeyIndex)
	}
	switch s.Aziot.AutoReprovisioningMode {
	case "", "Dynamic", "AlwaysOnStartup", "OnErrorOnly":
	default:
		bad("aziot.auto_reprovisioning_mode", "%q is not Dynamic, AlwaysOnStartup or OnErrorOnly", s.Aziot.AutoReprovisioningMode)
	}
	if s.Aziot.Config == "" {
		bad("aziot.config", "must not be empty")
	}
	if s.Aziot.AgentImage == "" {
		bad("aziot.agent_image", "must not be empty")
	}
	if s.Images.ContainerdAddress == "" {
		bad("images.containerd_address", "must not be empty")
	}
	if s.Images.ContainerdNamespace == "" {
		bad("images.containerd_namespace", "must not be empty")
	}
	if s.Health.Timeout <= 0 {
		bad("health.timeout", "must be positive")
	}
	if s.State == "" {
		bad("state", "must not be empty")
	}
	return errors.Join(errs...)
}

// AziotTCTI is the TCTI aziot-tpmd needs to reach the TPM that URI names:
// tpm.tcti when set, else the one tpm2-tss has for the URI's kind of TPM
// (tpm.TCTI).
func (t *TPM) AziotTCTI() (string, error) {
	if t.TCTI != "" {
		return t.TCTI, nil
	}
	tcti, err := tpm.TCTI(t.URI)
	if err != nil {
		return "", fmt.Errorf("tpm.uri: %w; or set tpm.tcti (--tcti)", err)
	}
	return tcti, nil
}

// Duration is a time.Duration written as "90s" or "5m" in TOML.
type Duration = layered.Duration
