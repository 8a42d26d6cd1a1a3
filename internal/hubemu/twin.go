package hubemu

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// Twin limits (edge-runtime.md §4.5, iot-hub-devguide-device-twins).
const (
	maxTwinSize  = 32 * 1024
	maxTwinDepth = 10
)

// Twin is a snapshot of a module or device twin.
type Twin struct {
	// Desired and Reported are the property documents without $version.
	Desired, Reported json.RawMessage
	// DesiredVersion and ReportedVersion are their $version.
	DesiredVersion, ReportedVersion int64
}

type twinState struct {
	desired, reported               map[string]any
	desiredVersion, reportedVersion int64
}

// twinLocked returns id's twin, creating it as IoT Hub creates one: empty
// documents at $version 1. s.twinMu must be held.
func (s *Server) twinLocked(id identity) *twinState {
	t := s.twins[id]
	if t == nil {
		t = &twinState{desired: map[string]any{}, reported: map[string]any{}, desiredVersion: 1, reportedVersion: 1}
		s.twins[id] = t
	}
	return t
}

// Twin returns the twin of a module (module "" for a device).
func (s *Server) Twin(device, module string) (Twin, error) {
	if _, ok := s.key(device, module); !ok {
		return Twin{}, fmt.Errorf("twin of %s: %w", identity{device, module}, ErrUnknownIdentity)
	}
	s.twinMu.Lock()
	defer s.twinMu.Unlock()
	t := s.twinLocked(identity{device, module})
	d, _ := json.Marshal(t.desired)
	r, _ := json.Marshal(t.reported)
	return Twin{Desired: d, Reported: r, DesiredVersion: t.desiredVersion, ReportedVersion: t.reportedVersion}, nil
}

// UpdateDesired merges patch into the desired properties (JSON merge: null
// deletes), bumps the desired $version and, if the module is connected and
// subscribed to $iothub/twin/PATCH/properties/desired/#, sends it the
// patch with "$version" (edge-runtime.md §4.3, §5). Disconnected modules
// get nothing queued; they GET the twin when they reconnect.
func (s *Server) UpdateDesired(device, module string, patch json.RawMessage) (int64, error) {
	id := identity{device, module}
	if _, ok := s.key(device, module); !ok {
		return 0, fmt.Errorf("update desired of %s: %w", id, ErrUnknownIdentity)
	}
	p, err := decodePatch(patch)
	if err != nil {
		return 0, fmt.Errorf("update desired of %s: %w", id, err)
	}
	s.twinMu.Lock()
	defer s.twinMu.Unlock()
	t := s.twinLocked(id)
	merged, err := mergeChecked(t.desired, p)
	if err != nil {
		return 0, fmt.Errorf("update desired of %s: %w", id, err)
	}
	t.desired = merged
	t.desiredVersion++
	v := t.desiredVersion

	if c := s.connected(id); c != nil {
		topic := "$iothub/twin/PATCH/properties/desired/?$version=" + strconv.FormatInt(v, 10)
		if qos, ok := c.subscription(topic, nil); ok {
			p["$version"] = v
			body, _ := json.Marshal(p)
			if _, _, err := c.publish(topic, body, qos, false); err != nil {
				s.log.Info().Str("client", id.String()).Err(err).Msg("desired patch not sent")
			}
		}
	}
	return v, nil
}

// twinGet answers $iothub/twin/GET with the desired and reported documents,
// each with its $version (edge-runtime.md §4.3).
func (s *Server) twinGet(c *conn, rid string) {
	s.twinMu.Lock()
	defer s.twinMu.Unlock()
	t := s.twinLocked(c.id)
	body, _ := json.Marshal(map[string]any{
		"desired":  withVersion(t.desired, t.desiredVersion),
		"reported": withVersion(t.reported, t.reportedVersion),
	})
	s.twinRespond(c, 200, rid, body)
}

// twinReported applies a reported-properties patch and answers 204 without
// $version, as edgeHub does (IoT Hub itself adds &$version=); a patch that
// is not a valid twin document, or would make the document exceed 32 KB,
// is answered 400 and not applied.
func (s *Server) twinReported(c *conn, rid string, body []byte) {
	s.twinMu.Lock()
	defer s.twinMu.Unlock()
	p, err := decodePatch(body)
	if err != nil {
		s.log.Info().Str("client", c.id.String()).Err(err).Msg("reported patch refused")
		s.twinRespond(c, 400, rid, nil)
		return
	}
	t := s.twinLocked(c.id)
	merged, err := mergeChecked(t.reported, p)
	if err != nil {
		s.log.Info().Str("client", c.id.String()).Err(err).Msg("reported patch refused")
		s.twinRespond(c, 400, rid, nil)
		return
	}
	t.reported = merged
	t.reportedVersion++
	s.twinRespond(c, 204, rid, nil)
}

// twinRespond sends a twin response if the client subscribed to exactly
// $iothub/twin/res/# (SessionStateParser TwinResponseTopicFilter).
func (s *Server) twinRespond(c *conn, status int, rid string, body []byte) {
	topic := "$iothub/twin/res/" + strconv.Itoa(status) + "/?$rid=" + rid
	qos, ok := c.subscription(topic, func(f string) bool { return f == twinResponseFilter })
	if !ok {
		s.log.Info().Str("client", c.id.String()).Msg("twin response dropped: not subscribed to " + twinResponseFilter)
		return
	}
	if _, _, err := c.publish(topic, body, qos, false); err != nil {
		s.log.Info().Str("client", c.id.String()).Err(err).Msg("twin response not sent")
	}
}

func withVersion(doc map[string]any, v int64) map[string]any {
	out := make(map[string]any, len(doc)+1)
	for k, x := range doc {
		out[k] = x
	}
	out["$version"] = v
	return out
}

// decodePatch decodes a twin patch: a JSON object whose keys follow the
// twin rules (no '.', '$', space or control characters), without arrays,
// nested at most 10 deep (edge-runtime.md §4.5). Numbers keep their text.
func decodePatch(data []byte) (map[string]any, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalidTwin, err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("%w: data after the JSON document", ErrInvalidTwin)
	}
	obj, ok := v.(map[string]any)
	if !ok {
		return nil, fmt.Errorf("%w: not a JSON object", ErrInvalidTwin)
	}
	if err := checkTwinValue(obj, 1); err != nil {
		return nil, err
	}
	return obj, nil
}

func checkTwinValue(v any, depth int) error {
	switch x := v.(type) {
	case map[string]any:
		if depth > maxTwinDepth {
			return fmt.Errorf("%w: nested deeper than %d", ErrInvalidTwin, maxTwinDepth)
		}
		for k, e := range x {
			if k == "" || strings.ContainsFunc(k, func(r rune) bool { return r == '.' || r == '$' || r == ' ' || r < 0x20 || r == 0x7f }) {
				return fmt.Errorf("%w: property name %q", ErrInvalidTwin, k)
			}
			if err := checkTwinValue(e, depth+1); err != nil {
				return err
			}
		}
	case []any:
		return fmt.Errorf("%w: arrays are not allowed", ErrInvalidTwin)
	}
	return nil
}

// mergeChecked returns doc with patch merged in (RFC 7386: objects merge,
// null deletes), refusing a result larger than 32 KB.
func mergeChecked(doc, patch map[string]any) (map[string]any, error) {
	out := deepCopy(doc).(map[string]any)
	merge(out, patch)
	b, err := json.Marshal(out)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalidTwin, err)
	}
	if len(b) > maxTwinSize {
		return nil, fmt.Errorf("%w: document would be %d bytes, limit %d", ErrInvalidTwin, len(b), maxTwinSize)
	}
	return out, nil
}

func merge(dst, patch map[string]any) {
	for k, v := range patch {
		switch pv := v.(type) {
		case nil:
			delete(dst, k)
		case map[string]any:
			d, ok := dst[k].(map[string]any)
			if !ok {
				d = map[string]any{}
				dst[k] = d
			}
			merge(d, pv)
		default:
			dst[k] = deepCopy(v)
		}
	}
}

func deepCopy(v any) any {
	switch x := v.(type) {
	case map[string]any:
		out := make(map[string]any, len(x))
		for k, e := range x {
			out[k] = deepCopy(e)
		}
		return out
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = deepCopy(e)
		}
		return out
	}
	return v
}
