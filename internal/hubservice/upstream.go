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
// are none yet, and the index of the first returned: the hub's
// X-Upstream-From, higher than from when it no longer keeps those, lower
// when from is past its last message (it restarted). It is the lab emulator's GET /messages/upstream, which
// IoT Hub does not have (IoT Hub's messages are read from its Event
// Hubs-compatible endpoint); it needs the service policy like the rest.
func (c *Client) Upstream(ctx context.Context, from int, wait time.Duration) ([]UpstreamMessage, int, error) {
	path := "/messages/upstream?from=" + strconv.Itoa(from)
	if wait > 0 {
		path += "&wait=" + wait.Round(time.Millisecond).String()
	}
	var out []UpstreamMessage
	h, err := c.send(ctx, APIVersion, http.MethodGet, path, "", nil, &out)
	if err != nil {
		return nil, 0, fmt.Errorf("upstream messages from %d: %w", from, err)
	}
	at, err := strconv.Atoi(h.Get("X-Upstream-From"))
	if err != nil || at < 0 {
		return nil, 0, fmt.Errorf("upstream messages from %d: X-Upstream-From %q is not an index", from, h.Get("X-Upstream-From"))
	}
	return out, at, nil
}
