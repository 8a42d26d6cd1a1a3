package lab

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	"github.com/edgetpm/edgetpm/internal/hubservice"
)

// ModuleIdentity is a module identity in IoT Hub as an edge device's
// runtime made it: the generation the module runs as
// (IOTEDGE_MODULEGENERATIONID) and the primary key its workload API signs
// with.
type ModuleIdentity struct {
	ModuleID, GenerationID string
	Key                    []byte
}

// CreateModule makes the identity of module in IoT Hub with the device's
// own credentials (c.Device), as aziot-identityd does for the modules of
// an edge device: a PUT without keys, which gives the module a generation,
// then an update with keys derived by the device's key from
// "moduleId:generationId:primary|secondary", as aziot-keyd derives them
// (iot-identity-service aziot-identityd/src/identity.rs). A module that
// exists keeps its generation, and so its keys.
func CreateModule(ctx context.Context, c *hubservice.Client, module string) (ModuleIdentity, error) {
	if c.Device == nil {
		return ModuleIdentity{}, errors.New("create module identity: the client has no device credentials")
	}
	device := c.Device.DeviceID
	m, err := c.PutModule(ctx, hubservice.Module{DeviceID: device, ModuleID: module}, "")
	if se := (*hubservice.ServiceError)(nil); errors.As(err, &se) && se.HTTPStatus == http.StatusConflict {
		m, err = c.GetModule(ctx, device, module)
	}
	if err != nil {
		return ModuleIdentity{}, fmt.Errorf("create module identity %s: %w", module, err)
	}
	var keys [2][]byte
	for i, name := range []string{"primary", "secondary"} {
		if keys[i], err = c.Device.Signer.Sign(ctx, []byte(module+":"+m.GenerationID+":"+name)); err != nil {
			return ModuleIdentity{}, fmt.Errorf("derive the keys of module identity %s: %w", module, err)
		}
	}
	_, err = c.PutModule(ctx, hubservice.Module{
		DeviceID: device, ModuleID: module,
		Authentication: &hubservice.Authentication{Type: "sas", SymmetricKey: &hubservice.SymmetricKey{PrimaryKey: keys[0], SecondaryKey: keys[1]}},
	}, "*")
	if err != nil {
		return ModuleIdentity{}, fmt.Errorf("set the keys of module identity %s: %w", module, err)
	}
	return ModuleIdentity{ModuleID: module, GenerationID: m.GenerationID, Key: keys[0]}, nil
}
