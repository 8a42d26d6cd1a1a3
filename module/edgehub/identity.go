package edgehub

import (
	"net"
	"strconv"

	"github.com/edgetpm/edgetpm/internal/sas"
)

// apiVersion is the IoT Hub MQTT API version in the user name; edgeHub
// only requires it to be present (docs/edge-protocol.md#mqtt-to-edgehub).
const apiVersion = "2019-10-01"

// clientType is sent as DeviceClientType.
const clientType = "edgetpm-edge-relay/1"

// Identity is who connects and where to.
type Identity struct {
	// HubHostName is the IoT hub (IOTEDGE_IOTHUBHOSTNAME): the host of the
	// token's audience and of the user name.
	HubHostName string
	DeviceID    string
	// ModuleID is empty for a device identity.
	ModuleID string
	// Host is where to connect and the name the server certificate must
	// carry: IOTEDGE_GATEWAYHOSTNAME for a module, the hub for a device.
	Host string
	// Address overrides where to dial ("host:port"), with the certificate
	// still checked against Host; empty dials Host:8883.
	Address string
}

func (id Identity) clientID() string {
	if id.ModuleID == "" {
		return id.DeviceID
	}
	return id.DeviceID + "/" + id.ModuleID
}

// username is HOST/DEVICE[/MODULE]/?api-version=...; ids are not encoded
// (edgeHub does not decode them).
func (id Identity) username() string {
	return id.HubHostName + "/" + id.clientID() + "/?api-version=" + apiVersion + "&DeviceClientType=" + escape(clientType)
}

func (id Identity) resource() string {
	if id.ModuleID == "" {
		return sas.DeviceResource(id.HubHostName, id.DeviceID)
	}
	return sas.ModuleResource(id.HubHostName, id.DeviceID, id.ModuleID)
}

// prefix is the identity's topic root.
func (id Identity) prefix() string {
	if id.ModuleID == "" {
		return "devices/" + id.DeviceID
	}
	return "devices/" + id.DeviceID + "/modules/" + id.ModuleID
}

func (id Identity) address() string {
	if id.Address != "" {
		return id.Address
	}
	return net.JoinHostPort(id.Host, strconv.Itoa(8883))
}
