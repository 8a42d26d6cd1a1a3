package edgehub

import (
	"fmt"
	"strings"
)

// Environment is what IoT Edge gives a module container
// (docs/edge-protocol.md#module-environment).
type Environment struct {
	WorkloadURI     string // IOTEDGE_WORKLOADURI
	ModuleID        string // IOTEDGE_MODULEID
	DeviceID        string // IOTEDGE_DEVICEID
	HubHostName     string // IOTEDGE_IOTHUBHOSTNAME
	GatewayHostName string // IOTEDGE_GATEWAYHOSTNAME
	GenerationID    string // IOTEDGE_MODULEGENERATIONID
	APIVersion      string // IOTEDGE_APIVERSION; optional
	AuthScheme      string // IOTEDGE_AUTHSCHEME; sasToken
}

// EnvironmentFrom reads the IoT Edge environment; the error names every
// variable that is missing.
func EnvironmentFrom(getenv func(string) string) (Environment, error) {
	e := Environment{
		WorkloadURI:     getenv("IOTEDGE_WORKLOADURI"),
		ModuleID:        getenv("IOTEDGE_MODULEID"),
		DeviceID:        getenv("IOTEDGE_DEVICEID"),
		HubHostName:     getenv("IOTEDGE_IOTHUBHOSTNAME"),
		GatewayHostName: getenv("IOTEDGE_GATEWAYHOSTNAME"),
		GenerationID:    getenv("IOTEDGE_MODULEGENERATIONID"),
		APIVersion:      getenv("IOTEDGE_APIVERSION"),
		AuthScheme:      getenv("IOTEDGE_AUTHSCHEME"),
	}
	var missing []string
	for _, v := range []struct{ name, val string }{
		{"IOTEDGE_WORKLOADURI", e.WorkloadURI}, {"IOTEDGE_MODULEID", e.ModuleID}, {"IOTEDGE_DEVICEID", e.DeviceID},
		{"IOTEDGE_IOTHUBHOSTNAME", e.HubHostName}, {"IOTEDGE_GATEWAYHOSTNAME", e.GatewayHostName},
		{"IOTEDGE_MODULEGENERATIONID", e.GenerationID}, {"IOTEDGE_AUTHSCHEME", e.AuthScheme},
	} {
		if v.val == "" {
			missing = append(missing, v.name)
		}
	}
	if len(missing) > 0 {
		return e, fmt.Errorf("not started by IoT Edge? missing %s", strings.Join(missing, ", "))
	}
	// Node's ModuleClient requires the same (docs/edge-protocol.md#module-environment).
	if !strings.EqualFold(e.AuthScheme, "sasToken") {
		return e, fmt.Errorf("IOTEDGE_AUTHSCHEME %q: only sasToken is supported", e.AuthScheme)
	}
	return e, nil
}

// Identity is the module identity the environment describes, connecting
// to edgeHub at the gateway host.
func (e Environment) Identity() Identity {
	return Identity{HubHostName: e.HubHostName, DeviceID: e.DeviceID, ModuleID: e.ModuleID, Host: e.GatewayHostName}
}
