package hubservice

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"time"
)

// MethodResult is a direct method's answer: the status and payload the
// device or module sent back.
type MethodResult struct {
	Status  int             `json:"status"`
	Payload json.RawMessage `json:"payload"`
}

// InvokeMethod calls direct method name on a device (module "") or
// module with payload (nil: null), IoT Hub's POST /twins/{d}[/modules/{m}]/methods
// with {"methodName","payload","responseTimeoutInSeconds","connectTimeoutInSeconds"}
// (learn.microsoft.com azure/iot-hub/iot-hub-devguide-direct-methods,
// "Method invocation"). response and connect are rounded up to whole
// seconds; 0 leaves IoT Hub's defaults (30 s and 0 s). A module that is
// not connected makes a *ServiceError of HTTP 404 (DeviceNotOnline).
func (c *Client) InvokeMethod(ctx context.Context, deviceID, moduleID, name string, payload json.RawMessage, response, connect time.Duration) (*MethodResult, error) {
	if len(payload) == 0 {
		payload = json.RawMessage("null")
	}
	body := struct {
		MethodName string          `json:"methodName"`
		Payload    json.RawMessage `json:"payload"`
		Response   int             `json:"responseTimeoutInSeconds,omitempty"`
		Connect    int             `json:"connectTimeoutInSeconds,omitempty"`
	}{name, payload, seconds(response), seconds(connect)}
	var out MethodResult
	if err := c.do(ctx, http.MethodPost, twinPath(deviceID, moduleID)+"/methods", "", body, &out); err != nil {
		return nil, fmt.Errorf("invoke method %q on %s: %w", name, identity(deviceID, moduleID), err)
	}
	return &out, nil
}

func seconds(d time.Duration) int {
	return int((d + time.Second - 1) / time.Second)
}
