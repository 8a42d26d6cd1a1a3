package edgehub

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

	mqtt "github.com/eclipse/paho.mqtt.golang"
)

// TwinError is a twin request answered with a status other than success.
type TwinError struct {
	Status int
	Body   string
}

func (e *TwinError) Error() string {
	return fmt.Sprintf("twin request: status %d: %s", e.Status, e.Body)
}

// errConnectionLost ends requests whose connection went away before the
// answer came; ask again once connected.
var errConnectionLost = errors.New("connection lost before the twin answer")

// ErrNoTwinAnswer ends a twin request whose answer did not come within
// Config.TwinTimeout: lost on the way, or never sent. Whether a reported
// patch so ended was applied is unknown; asking again is safe, since
// patches merge.
var ErrNoTwinAnswer = errors.New("no twin answer in time")

type twinResponse struct {
	status int
	body   []byte
}

// GetTwin returns the twin: {"desired":{...},"reported":{...}}.
func (s *Session) GetTwin(ctx context.Context) ([]byte, error) {
	return s.twinRequest(ctx, "$iothub/twin/GET/", nil)
}

// ReportProperties merges patch into the reported properties. edgeHub
// answers 204 without a $version (docs/edge-protocol.md#twin-and-methods-over-mqtt).
func (s *Session) ReportProperties(ctx context.Context, patch []byte) error {
	_, err := s.twinRequest(ctx, "$iothub/twin/PATCH/properties/reported/", patch)
	return err
}

func (s *Session) twinRequest(ctx context.Context, topic string, body []byte) ([]byte, error) {
	cli, err := s.connected(ctx)
	if err != nil {
		return nil, err
	}
	// From the publish on: waiting for a connection is the caller's.
	ctx, cancel := context.WithTimeoutCause(ctx, s.cfg.TwinTimeout, fmt.Errorf("%s: %w after %v", strings.TrimSuffix(topic, "/"), ErrNoTwinAnswer, s.cfg.TwinTimeout))
	defer cancel()
	rid := strconv.FormatUint(s.rid.Add(1), 10)
	ch := make(chan twinResponse, 1)
	s.pending.Store(rid, ch)
	defer s.pending.Delete(rid)
	if err := wait(ctx, cli.Publish(topic+"?$rid="+rid, 0, false, body)); err != nil {
		return nil, err
	}
	select {
	case r := <-ch:
		if r.status == 0 {
			return nil, errConnectionLost
		}
		if r.status < 200 || r.status > 299 {
			return nil, &TwinError{r.status, string(r.body)}
		}
		return r.body, nil
	case <-ctx.Done():
		return nil, context.Cause(ctx)
	}
}

// onTwinResponse matches $iothub/twin/res/{status}/?$rid={rid}.
func (s *Session) onTwinResponse(_ context.Context, _ mqtt.Client, msg mqtt.Message) {
	msg.Ack()
	status, rid, err := parseTwinResponseTopic(msg.Topic())
	if err != nil {
		return
	}
	if ch, ok := s.pending.LoadAndDelete(rid); ok {
		ch.(chan twinResponse) <- twinResponse{status, msg.Payload()}
	}
}

// onDesired passes a desired patch on.
func (s *Session) onDesired(ctx context.Context, _ mqtt.Client, msg mqtt.Message) {
	msg.Ack()
	if s.cfg.Desired != nil {
		s.cfg.Desired(ctx, msg.Payload())
	}
}

// failPending ends every waiting twin request of a connection that ended.
// An answer may be handled meanwhile: whichever takes the request out of
// pending sends its one outcome, so the channel's one slot never fills
// twice.
func (s *Session) failPending() {
	s.pending.Range(func(k, _ any) bool {
		if v, ok := s.pending.LoadAndDelete(k); ok {
			v.(chan twinResponse) <- twinResponse{}
		}
		return true
	})
}
