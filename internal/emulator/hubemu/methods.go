package hubemu

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// maxMethodPayload is IoT Hub's direct method payload limit
// (docs/edge-protocol.md#twin-and-methods-over-mqtt).
const maxMethodPayload = 128 * 1024

type methodResult struct {
	status  int
	payload json.RawMessage
}

func methodKey(id identity, rid string) string { return id.String() + "\x00" + rid }

// InvokeMethod calls a direct method on a connected module (module "" for
// a device) and waits up to timeout for its answer (docs/edge-protocol.md#twin-and-methods-over-mqtt):
// request on $iothub/methods/POST/{method}/?$rid={rid}, response on
// $iothub/methods/res/{status}/?$rid={rid}. It returns ErrNotConnected when
// the module is not connected or not subscribed to $iothub/methods/POST/#,
// and ErrMethodTimeout when it does not answer in time. resp is the
// response payload as sent, nil when empty.
func (s *Server) InvokeMethod(ctx context.Context, device, module, method string, payload json.RawMessage, timeout time.Duration) (status int, resp json.RawMessage, err error) {
	id := identity{device, module}
	if method == "" || strings.ContainsAny(method, "/+#") {
		return 0, nil, fmt.Errorf("invoke method %q on %s: %w: method name", method, id, ErrInvalidArgument)
	}
	if len(payload) > maxMethodPayload {
		return 0, nil, fmt.Errorf("invoke method %q on %s: %w: payload larger than 128 KB", method, id, ErrInvalidArgument)
	}
	if timeout <= 0 {
		timeout = 30 * time.Second
	}
	c := s.connected(id)
	if c == nil {
		return 0, nil, fmt.Errorf("invoke method %q on %s: %w", method, id, ErrNotConnected)
	}
	rid := strconv.FormatUint(s.ridSeq.Add(1), 16)
	topic := "$iothub/methods/POST/" + method + "/?$rid=" + rid
	qos, ok := c.subscription(topic, nil)
	if !ok {
		return 0, nil, fmt.Errorf("invoke method %q on %s: %w: not subscribed to $iothub/methods/POST/#", method, id, ErrNotConnected)
	}
	ch := make(chan methodResult, 1)
	key := methodKey(id, rid)
	s.mu.Lock()
	s.methods[key] = ch
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.methods, key)
		s.mu.Unlock()
	}()
	if _, _, err := c.publish(topic, payload, qos, false); err != nil {
		return 0, nil, fmt.Errorf("invoke method %q on %s: %w: %v", method, id, ErrNotConnected, err)
	}
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case r := <-ch:
		return r.status, r.payload, nil
	case <-t.C:
		return 0, nil, fmt.Errorf("invoke method %q on %s: %w after %s", method, id, ErrMethodTimeout, timeout)
	case <-ctx.Done():
		return 0, nil, fmt.Errorf("invoke method %q on %s: %w", method, id, context.Cause(ctx))
	case <-s.stopping:
		return 0, nil, fmt.Errorf("invoke method %q on %s: %w", method, id, ErrStopped)
	}
}

// methodResponse completes the pending call rid of id; responses nobody
// waits for (late, unknown, from another identity) are dropped.
func (s *Server) methodResponse(id identity, rid string, status int, payload []byte) {
	s.mu.Lock()
	ch := s.methods[methodKey(id, rid)]
	delete(s.methods, methodKey(id, rid))
	s.mu.Unlock()
	if ch == nil {
		s.log.Info().Str("client", id.String()).Str("rid", rid).Msg("method response dropped: no call waiting")
		return
	}
	var resp json.RawMessage
	if len(payload) > 0 {
		resp = payload
	}
	ch <- methodResult{status: status, payload: resp}
}
