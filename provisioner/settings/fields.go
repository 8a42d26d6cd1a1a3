package settings

import (
	"github.com/edgetpm/edgetpm/internal/layered"
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

// field is one setting and the group that offers its flag.
type field struct {
	layered.Field
	group Group
}

func (s *Settings) fields() []field {
	return []field{
		{layered.Field{Key: "dps.id_scope", Env: "EDGE_DPS_ID_SCOPE", Flag: "id-scope", Usage: "DPS ID `SCOPE`, e.g. 0ne00000000", Value: layered.StringVar(&s.DPS.IDScope)}, DPSGroup},
		{layered.Field{Key: "dps.endpoint", Env: "EDGE_DPS_ENDPOINT", Flag: "endpoint", Usage: "DPS device endpoint `URL`", Value: layered.StringVar(&s.DPS.Endpoint)}, DPSGroup},
		{layered.Field{Key: "dps.registration_id", Env: "EDGE_DPS_REGISTRATION_ID", Flag: "registration-id", Usage: "registration `ID` enrolled in DPS (default: derived from the endorsement key)", Value: layered.StringVar(&s.DPS.RegistrationID)}, DPSGroup},
		{layered.Field{Key: "dps.payload_file", Env: "EDGE_DPS_PAYLOAD_FILE", Flag: "payload", Usage: "send the JSON in `FILE` as the registration payload (custom allocation)", Value: layered.StringVar(&s.DPS.PayloadFile)}, DPSGroup},
		{layered.Field{Key: "dps.ca_file", Env: "EDGE_DPS_CA_FILE", Flag: "ca-file", Usage: "also trust the CA certificates in `PEM` (private endpoints, the local lab)", Value: layered.StringVar(&s.DPS.CAFile)}, DPSGroup},
		{layered.Field{Key: "dps.timeout", Env: "EDGE_DPS_TIMEOUT", Flag: "timeout", Usage: "give up registering after this `DURATION`, retries and polls included", Value: layered.DurationVar(&s.DPS.Timeout)}, DPSGroup},
		{layered.Field{Key: "dps.register", Env: "EDGE_DPS_REGISTER", Flag: "skip-register", Usage: "do not register with DPS; leave it to the IoT Edge runtime", Value: layered.NegatedBoolVar(&s.DPS.Register)}, ProvisionGroup},

		{layered.Field{Key: "tpm.uri", Env: "EDGE_TPM", Flag: "tpm", Usage: "TPM `URI`: device:/dev/tpmrm0, swtpm://HOST:PORT, or mssim://HOST:PORT (the reference simulator)", Value: layered.StringVar(&s.TPM.URI)}, TPMGroup},
		{layered.Field{Key: "tpm.auth_key_index", Env: "EDGE_TPM_AUTH_KEY_INDEX", Flag: "auth-key-index", Usage: "persistent handle of the hub key, as an `INDEX` added to 0x81000000 like aziot's auth_key_index", Value: layered.IndexVar(&s.TPM.AuthKeyIndex)}, TPMGroup},
		{layered.Field{Key: "tpm.tcti", Env: "EDGE_TPM_TCTI", Flag: "tcti", Usage: "`TCTI` written for aziot-tpmd (default: derived from --tpm)", Value: layered.StringVar(&s.TPM.TCTI)}, AziotGroup},
		// The passwords' own variables hold the password, not a file name:
		// see Load.
		{layered.Field{Key: "tpm.endorsement_password_file", Flag: "endorsement-auth-file", Usage: "read the endorsement hierarchy password from `FILE` (or set $" + EnvEndorsementAuth + ")", Value: layered.StringVar(&s.TPM.EndorsementPasswordFile)}, TPMGroup},
		{layered.Field{Key: "tpm.owner_password_file", Flag: "owner-auth-file", Usage: "read the owner hierarchy password from `FILE` (or set $" + EnvOwnerAuth + ")", Value: layered.StringVar(&s.TPM.OwnerPasswordFile)}, TPMGroup},

		{layered.Field{Key: "aziot.config", Env: "EDGE_AZIOT_CONFIG", Flag: "aziot-config", Usage: "the IoT Edge runtime's config `FILE`", Value: layered.StringVar(&s.Aziot.Config)}, AziotGroup},
		{layered.Field{Key: "aziot.hostname", Env: "EDGE_AZIOT_HOSTNAME", Flag: "hostname", Usage: "host `NAME` written to config.toml (default: keep the file's)", Value: layered.StringVar(&s.Aziot.Hostname)}, AziotGroup},
		{layered.Field{Key: "aziot.auto_reprovisioning_mode", Env: "EDGE_AZIOT_AUTO_REPROVISIONING_MODE", Flag: "auto-reprovisioning-mode", Usage: "`MODE`: Dynamic, AlwaysOnStartup or OnErrorOnly", Value: layered.StringVar(&s.Aziot.AutoReprovisioningMode)}, AziotGroup},
		{layered.Field{Key: "aziot.agent_image", Env: "EDGE_AZIOT_AGENT_IMAGE", Flag: "agent-image", Usage: "edgeAgent `IMAGE`, written when config.toml has no [agent] table", Value: layered.StringVar(&s.Aziot.AgentImage)}, AziotGroup},
		{layered.Field{Key: "aziot.apply", Env: "EDGE_AZIOT_APPLY", Flag: "no-apply", Usage: "write config.toml but do not run 'iotedge config apply'", Value: layered.NegatedBoolVar(&s.Aziot.Apply)}, ProvisionGroup},

		{layered.Field{Key: "images.files", Env: "EDGE_IMAGES", Flag: "image", Usage: "side-load the image archive `FILE` (repeatable; the variable takes a comma-separated list)", Value: layered.ListVar(&s.Images.Files)}, ProvisionGroup},
		{layered.Field{Key: "images.containerd_address", Env: "EDGE_CONTAINERD_ADDRESS", Flag: "containerd-address", Usage: "containerd's socket `PATH`", Value: layered.StringVar(&s.Images.ContainerdAddress)}, ContainerdGroup},
		{layered.Field{Key: "images.containerd_namespace", Env: "EDGE_CONTAINERD_NAMESPACE", Flag: "containerd-namespace", Usage: "containerd `NAMESPACE` the runtime uses (Docker's is moby)", Value: layered.StringVar(&s.Images.ContainerdNamespace)}, ContainerdGroup},
		{layered.Field{Key: "images.docker_socket", Env: "EDGE_DOCKER_SOCKET", Flag: "docker-socket", Usage: "Docker's socket `PATH`, to load through Docker when it keeps images in its classic store (empty: never)", Value: layered.StringVar(&s.Images.DockerSocket)}, ContainerdGroup},

		{layered.Field{Key: "health.wait", Env: "EDGE_HEALTH_WAIT", Flag: "no-wait", Usage: "do not wait for the runtime's modules to run", Value: layered.NegatedBoolVar(&s.Health.Wait)}, ProvisionGroup},
		{layered.Field{Key: "health.timeout", Env: "EDGE_HEALTH_TIMEOUT", Flag: "wait-timeout", Usage: "how long to wait for the runtime's modules, as a `DURATION`", Value: layered.DurationVar(&s.Health.Timeout)}, ProvisionGroup},
		{layered.Field{Key: "health.modules", Env: "EDGE_HEALTH_MODULES", Flag: "wait-for", Usage: "comma-separated `MODULES` that must be running", Value: layered.CommaListVar(&s.Health.Modules)}, ProvisionGroup},

		{layered.Field{Key: "state", Env: "EDGE_PROVISIONER_STATE", Flag: "state", Usage: "the DPS assignment `FILE`", Value: layered.StringVar(&s.State)}, StateGroup},
	}
}
