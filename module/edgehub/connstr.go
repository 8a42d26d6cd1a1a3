package edgehub

import (
	"encoding/base64"
	"errors"
	"fmt"
	"strings"

	"github.com/edgetpm/edgetpm/internal/sas"
)

// ParseConnectionString reads a device or module connection string, the
// development convention (docs/edge-protocol.md#module-environment):
// HostName=HUB;DeviceId=D[;ModuleId=M];SharedAccessKey=B64[;GatewayHostName=GW].
// It returns the identity (connecting to the gateway when one is named,
// else the hub) and the key.
func ParseConnectionString(s string) (Identity, []byte, error) {
	fields := map[string]string{}
	for part := range strings.SplitSeq(strings.TrimSpace(s), ";") {
		if part == "" {
			continue
		}
		k, v, ok := strings.Cut(part, "=")
		if !ok {
			return Identity{}, nil, errors.New("connection string: a field has no '='")
		}
		k = strings.TrimSpace(k)
		if _, dup := fields[k]; dup {
			return Identity{}, nil, fmt.Errorf("connection string: %s twice", k)
		}
		switch k {
		case "HostName", "DeviceId", "ModuleId", "SharedAccessKey", "GatewayHostName":
		default:
			return Identity{}, nil, fmt.Errorf("connection string: unknown field %q", k)
		}
		fields[k] = strings.TrimSpace(v)
	}
	if fields["HostName"] == "" || fields["DeviceId"] == "" || fields["SharedAccessKey"] == "" {
		return Identity{}, nil, errors.New("connection string: needs HostName, DeviceId and SharedAccessKey")
	}
	// The IDs and host names go into topics, the user name and the
	// token's audience unencoded: refuse what IoT Hub would never issue.
	for _, k := range []string{"DeviceId", "ModuleId"} {
		if v, ok := fields[k]; ok && !sas.ValidID(v) {
			return Identity{}, nil, fmt.Errorf("connection string: %s %q: want 1 to 128 ASCII letters, digits or - : . + %% _ # * ? ! ( ) , = @ $ '", k, v)
		}
	}
	for _, k := range []string{"HostName", "GatewayHostName"} {
		if v, ok := fields[k]; ok && !sas.ValidHostName(v) {
			return Identity{}, nil, fmt.Errorf("connection string: %s %q is not a host name", k, v)
		}
	}
	key, err := base64.StdEncoding.DecodeString(fields["SharedAccessKey"])
	if err != nil || len(key) == 0 {
		return Identity{}, nil, errors.New("connection string: SharedAccessKey is not base64")
	}
	id := Identity{HubHostName: fields["HostName"], DeviceID: fields["DeviceId"], ModuleID: fields["ModuleId"], Host: fields["GatewayHostName"]}
	if id.Host == "" {
		id.Host = id.HubHostName
	}
	return id, key, nil
}
