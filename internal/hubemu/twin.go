package hubemu

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"reflect"
	"slices"
	"strconv"
	"strings"
)

// Twin limits (edge-runtime.md §4.5, iot-hub-devguide-device-twins).
const (
	maxTwinSize  = 32 * 1024
	maxTwinDepth = 10
)

// Module ids of the edge runtime's system modules.
const (
	edgeAgent = "$edgeAgent"
	edgeHub   = "$edgeHub"
)

// Twin is a snapshot of a module or device twin.
type Twin struct {
	// Desired and Reported are the property documents without $version.
	Desired, Reported json.RawMessage
	// DesiredVersion and ReportedVersion are their $version.
	DesiredVersion, ReportedVersion int64
	// Tags are a device twin's tags ({} when none); nil for module twins.
	Tags json.RawMessage
}

type twinState struct {
	desired, reported               map[string]any
	desiredVersion, reportedVersion int64
	tags                            map[string]any // device twins only
}

// twinLocked returns id's twin, creating it as IoT Hub creates one: empty
// documents at $version 1. s.twinMu must be held.
func (s *Server) twinLocked(id identity) *twinState {
	t := s.twins[id]
	if t == nil {
		t = &twinState{desired: map[string]any{}, reported: map[string]any{}, desiredVersion: 1, reportedVersion: 1}
		if id.module == "" {
			t.tags = map[string]any{}
		}
		s.twins[id] = t
	}
	return t
}

// known reports whether id has a twin: Config.Key knows it, or its device
// is in Config.Devices and it is the device itself, its $edgeAgent or
// $edgeHub, or a module whose twin a deployment created. It must not be
// called with s.twinMu held.
func (s *Server) known(id identity) bool {
	if _, ok := s.key(id.device, id.module); ok {
		return true
	}
	if !s.isDevice(id.device) {
		return false
	}
	switch id.module {
	case "", edgeAgent, edgeHub:
		return true
	}
	s.twinMu.Lock()
	defer s.twinMu.Unlock()
	_, ok := s.twins[id]
	return ok
}

// isDevice reports whether Config.Devices lists device.
func (s *Server) isDevice(device string) bool {
	return s.devices != nil && slices.Contains(s.devices(), device)
}

// Twin returns the twin of a module (module "" for a device).
func (s *Server) Twin(device, module string) (Twin, error) {
	id := identity{device, module}
	if !s.known(id) {
		return Twin{}, fmt.Errorf("twin of %s: %w", id, ErrUnknownIdentity)
	}
	s.twinMu.Lock()
	defer s.twinMu.Unlock()
	t := s.twinLocked(id)
	d, _ := json.Marshal(t.desired)
	r, _ := json.Marshal(t.reported)
	tw := Twin{Desired: d, Reported: r, DesiredVersion: t.desiredVersion, ReportedVersion: t.reportedVersion}
	if module == "" {
		tw.Tags, _ = json.Marshal(t.tags)
	}
	return tw, nil
}

// UpdateDesired merges patch into the desired properties (JSON merge: null
// deletes), bumps the desired $version and, if the module is connected and
// subscribed to $iothub/twin/PATCH/properties/desired/#, sends it the
// patch with "$version" (edge-runtime.md §4.3, §5). Disconnected modules
// get nothing queued; they GET the twin when they reconnect.
func (s *Server) UpdateDesired(device, module string, patch json.RawMessage) (int64, error) {
	id := identity{device, module}
	if !s.known(id) {
		return 0, fmt.Errorf("update desired of %s: %w", id, ErrUnknownIdentity)
	}
	p, err := decodePatch(patch)
	if err != nil {
		return 0, fmt.Errorf("update desired of %s: %w", id, err)
	}
	s.twinMu.Lock()
	t := s.twinLocked(id)
	merged, err := mergeChecked(t.desired, p)
	if err != nil {
		s.twinMu.Unlock()
		return 0, fmt.Errorf("update desired of %s: %w", id, err)
	}
	v := s.setDesiredLocked(id, t, merged, p)
	s.twinMu.Unlock()
	if module == edgeAgent {
		s.runAgent(device, v, merged)
	}
	return v, nil
}

// setDesiredLocked stores doc as id's desired properties, bumps $version
// and pushes patch (with "$version") to the module if it is connected and
// subscribed. s.twinMu must be held; patch is modified.
func (s *Server) setDesiredLocked(id identity, t *twinState, doc, patch map[string]any) int64 {
	t.desired = doc
	t.desiredVersion++
	v := t.desiredVersion
	if c := s.connected(id); c != nil {
		topic := "$iothub/twin/PATCH/properties/desired/?$version=" + strconv.FormatInt(v, 10)
		if qos, ok := c.subscription(topic, nil); ok {
			patch["$version"] = v
			body, _ := json.Marshal(patch)
			if _, _, err := c.publish(topic, body, qos, false); err != nil {
				s.log.Info().Str("client", id.String()).Err(err).Msg("desired patch not sent")
			}
		}
	}
	return v
}

// replaceDesiredLocked replaces id's desired properties with doc, as a
// deployment's "properties.desired" does (edge-runtime.md §6.1), pushing a
// patch that also deletes the members doc no longer has. Nothing changes,
// and changed is false, when doc equals the current properties. s.twinMu
// must be held.
func (s *Server) replaceDesiredLocked(id identity, doc map[string]any) (version int64, changed bool, err error) {
	t := s.twinLocked(id)
	patch := diffPatch(t.desired, doc)
	if len(patch) == 0 {
		return t.desiredVersion, false, nil
	}
	merged, err := mergeChecked(t.desired, patch)
	if err != nil {
		return 0, false, fmt.Errorf("replace desired of %s: %w", id, err)
	}
	return s.setDesiredLocked(id, t, merged, patch), true, nil
}

// runAgent has Config.Agent judge a device's new $edgeAgent desired
// properties, at $version version, and reports its verdict on the
// $edgeAgent twin as edgeAgent does (lastDesiredVersion,
// lastDesiredStatus). s.twinMu must not be held: Agent may read twins.
func (s *Server) runAgent(device string, version int64, desired map[string]any) {
	if s.agent == nil {
		return
	}
	body, _ := json.Marshal(withVersion(desired, version))
	code := s.agent(device, body)
	description := ""
	if code != 200 {
		description = http.StatusText(code)
	}
	report := map[string]any{
		"lastDesiredVersion": json.Number(strconv.FormatInt(version, 10)),
		"lastDesiredStatus":  map[string]any{"code": json.Number(strconv.Itoa(code)), "description": description},
	}
	s.twinMu.Lock()
	defer s.twinMu.Unlock()
	t := s.twinLocked(identity{device, edgeAgent})
	merge(t.reported, report)
	t.reportedVersion++
}

// SetTags replaces a device twin's tags with tags, a JSON object following
// the twin rules, and applies the automatic deployments again.
func (s *Server) SetTags(device string, tags json.RawMessage) error {
	if err := s.changeTags(device, tags, true); err != nil {
		return fmt.Errorf("set tags of %s: %w", device, err)
	}
	return nil
}

// changeTags merges patch into (or, with replace, replaces) a device's
// tags and reconciles the deployments.
func (s *Server) changeTags(device string, patch json.RawMessage, replace bool) error {
	if !s.known(identity{device, ""}) {
		return ErrUnknownIdentity
	}
	p, err := decodePatch(patch)
	if err != nil {
		return err
	}
	s.deployMu.Lock()
	defer s.deployMu.Unlock()
	s.twinMu.Lock()
	t := s.twinLocked(identity{device, ""})
	base := t.tags
	if replace {
		base = map[string]any{}
	}
	merged, err := mergeChecked(base, p)
	if err == nil {
		t.tags = merged
	}
	s.twinMu.Unlock()
	if err != nil {
		return err
	}
	s.reconcileLocked()
	return nil
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

// diffPatch returns the JSON merge patch that turns doc into want: members
// of doc that want lacks become null.
func diffPatch(doc, want map[string]any) map[string]any {
	patch := map[string]any{}
	for k := range doc {
		if _, ok := want[k]; !ok {
			patch[k] = nil
		}
	}
	for k, w := range want {
		d, had := doc[k]
		dm, dok := d.(map[string]any)
		wm, wok := w.(map[string]any)
		switch {
		case had && dok && wok:
			if sub := diffPatch(dm, wm); len(sub) > 0 {
				patch[k] = sub
			}
		case !had || !reflect.DeepEqual(d, w):
			patch[k] = deepCopy(w)
		}
	}
	return patch
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
