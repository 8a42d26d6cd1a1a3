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
// The call waits as long as the hub may, response + connect + 10 s,
// whatever fixed Timeout c.HTTP has.
func (c *Client) InvokeMethod(ctx context.Context, deviceID, moduleID, name string, payload json.RawMessage, response, connect time.Duration) (*MethodResult, error) {
	wait := time.Duration(seconds(response)) * time.Second
	if wait == 0 {
		wait = defaultMethodResponse
	}
	ctx, cancel := context.WithTimeout(ctx, wait+time.Duration(seconds(connect))*time.Second+methodSlack)
	defer cancel()
	if c.HTTP != nil && c.HTTP.Timeout != 0 {
		hc := *c.HTTP
		hc.Timeout = 0
		cc := *c
		cc.HTTP = &hc
		c = &cc
	}
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
		return nil, fmt.Errorf("invoke method %q on %s: %w", name, Identity(deviceID, moduleID), err)
	}
	return &out, nil
}

// defaultMethodResponse is IoT Hub's responseTimeoutInSeconds when the
// call names none; methodSlack is the time the call allows the hub beyond
// its own waits.
const (
	defaultMethodResponse = 30 * time.Second
	methodSlack           = 10 * time.Second
)

func seconds(d time.Duration) int {
	return int((d + time.Second - 1) / time.Second)
}
