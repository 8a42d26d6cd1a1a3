package edgeconfig_test

import (
	"fmt"
	"log"

	"github.com/edgetpm/edgetpm/provisioner/edgeconfig"
)

func ExampleDocument_SetDPS() {
	doc, err := edgeconfig.Parse([]byte(`# Gateway in hall 3.
hostname = "gw-hall-3"

[provisioning]
source = "manual"
connection_string = "HostName=pilot.azure-devices.net;DeviceId=gw-hall-3;SharedAccessKey=c2VjcmV0"

[moby_runtime]
uri = "unix:///var/run/docker.sock"   # the host's Docker
network = "azure-iot-edge"
`))
	if err != nil {
		log.Fatal(err)
	}
	s := edgeconfig.DPS{
		GlobalEndpoint: edgeconfig.DefaultGlobalEndpoint,
		IDScope:        "0ne00ABCDEF",
		RegistrationID: "gw-hall-3",
		TCTI:           "device:/dev/tpmrm0",
		AuthKeyIndex:   0x100,
	}
	if err := doc.SetDPS(s, false); err != nil {
		fmt.Println(err)
	}
	// The operator asked to replace the manual provisioning.
	if err := doc.SetDPS(s, true); err != nil {
		log.Fatal(err)
	}
	fmt.Print(string(doc.Bytes()))
	// Then: edgeconfig.Write(edgeconfig.DefaultPath, doc.Bytes(), time.Now())
	// and edgeconfig.Apply(ctx, edgeconfig.DefaultPath, os.Stderr).

	// Output:
	// config.toml provisions by "manual"; refusing to replace it with DPS TPM attestation (use --force)
	// # Gateway in hall 3.
	// hostname = "gw-hall-3"
	//
	// [provisioning]
	// source = "dps"
	// global_endpoint = "https://global.azure-devices-provisioning.net"
	// id_scope = "0ne00ABCDEF"
	//
	// [provisioning.attestation]
	// method = "tpm"
	// registration_id = "gw-hall-3"
	//
	// [moby_runtime]
	// uri = "unix:///var/run/docker.sock"   # the host's Docker
	// network = "azure-iot-edge"
	//
	// [tpm]
	// tcti = "device:/dev/tpmrm0"
	// auth_key_index = 0x00_01_00
}
