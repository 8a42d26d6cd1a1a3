package hubservice

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"time"
)

// UpstreamMessage is a device-to-cloud message as the lab's hub emulator
// answers it on GET /messages/upstream (internal/emulator/hubemu).
type UpstreamMessage struct {
	Body []byte `json:"body"`
	// Properties are the application properties.
	Properties map[string]string `json:"properties,omitempty"`
	// System are the system properties by MQTT wire name ("$.mid",
	// "$.cid", "$.ct", "$.ce", "$.cdid", "$.cmid").
	System map[string]string `json:"systemProperties,omitempty"`
	// From is the sender, "device/module" or "device".
	From string `json:"from,omitempty"`
	// Received is when the hub accepted it.
	Received time.Time `json:"received"`
}

// Upstream returns the messages that reached the hub's $upstream from
// index from on, waiting up to wait (at most a minute) for one when there
// are none yet. It is the lab emulator's GET /messages/upstream, which
// IoT Hub does not have (IoT Hub's messages are read from its Event
// Hubs-compatible endpoint); it needs the service policy like the rest.
func (c *Client) Upstream(ctx context.Context, from int, wait time.Duration) ([]UpstreamMessage, error) {
	path := "/messages/upstream?from=" + strconv.Itoa(from)
	if wait > 0 {
		path += "&wait=" + wait.Round(time.Millisecond).String()
	}
	var out []UpstreamMessage
	if err := c.do(ctx, http.MethodGet, path, "", nil, &out); err != nil {
		return nil, fmt.Errorf("upstream messages from %d: %w", from, err)
	}
	return out, nil
}
