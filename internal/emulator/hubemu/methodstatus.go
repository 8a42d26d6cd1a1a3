package hubemu

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"time"
)

// IoT Hub's numeric error codes of a direct method call, in the JSON it
// nests in the error's Message (azure-iot-cli-extension issue 54,
// azure-iot-sdk-java issue 640).
const (
	codeDeviceNotOnline = 404103 // "Timed out waiting for device to connect."
	codeGatewayTimeout  = 504101 // "Timed out waiting for the response from device."
)

// connectPoll is how often a method call with connectTimeoutInSeconds
// looks for the module to connect.
const connectPoll = 50 * time.Millisecond

// waitConnected waits up to d for id to be connected and subscribed to
// direct methods, and tells whether it is.
func (s *Server) waitConnected(ctx context.Context, id identity, d time.Duration) bool {
	deadline := time.Now().Add(d)
	for {
		if c := s.connected(id); c != nil {
			if _, ok := c.subscription("$iothub/methods/POST/x/?$rid=0", nil); ok {
				return true
			}
		}
		if !time.Now().Before(deadline) {
			return false
		}
		select {
		case <-ctx.Done():
			return false
		case <-s.stopping:
			return false
		case <-time.After(connectPoll):
		}
	}
}

// writeMethodError answers a direct method call as IoT Hub does when the
// device is not online (404, 404103 DeviceNotOnline) or does not answer
// in time (504, 504101 GatewayTimeout): the iothub-errorcode header
// names the error, and the body's Message is itself JSON,
// {"errorCode","trackingId","message","info","timestampUtc"}; info of
// 404103 holds the connect timeout as hh:mm:ss.
func (s *Server) writeMethodError(w http.ResponseWriter, code int, connectTimeout time.Duration) {
	status, name, msg, info := http.StatusNotFound, "DeviceNotOnline", "Timed out waiting for device to connect.", map[string]string{"timeout": hms(connectTimeout)}
	if code == codeGatewayTimeout {
		status, name, msg, info = http.StatusGatewayTimeout, "GatewayTimeout", "Timed out waiting for the response from device.", map[string]string{}
	}
	now := s.now().UTC()
	inner, _ := json.Marshal(map[string]any{
		"errorCode":    code,
		"trackingId":   strconv.FormatUint(s.ridSeq.Add(1), 16) + "-G:0-TimeStamp:" + now.Format("01/02/2006 15:04:05"),
		"message":      msg,
		"info":         info,
		"timestampUtc": now.Format(time.RFC3339Nano),
	})
	w.Header().Set("iothub-errorcode", name)
	writeJSON(w, status, map[string]string{"Message": string(inner), "ExceptionMessage": ""})
}

// hms formats d as .NET formats a TimeSpan: hh:mm:ss.
func hms(d time.Duration) string {
	sec := int(d / time.Second)
	return fmt.Sprintf("%02d:%02d:%02d", sec/3600, sec/60%60, sec%60)
}
