package hubemu

import (
	"encoding/json"
	"fmt"
	"net/http"
	"reflect"
	"slices"
	"strconv"
	"strings"
)

// Twin limits (docs/edge-protocol.md#limits, iot-hub-devguide-device-twins).
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
	// Version counts every change of the twin and ETag names it
	// (twinetag.go).
	Version int64
	ETag    string
}

type twinState struct {
	desired, reported               map[string]any
	desiredVersion, reportedVersion int64
	tags                            map[string]any // device twins only
	version                         int64          // every change bumps it (twinetag.go)
}

// twinLocked returns id's twin, creating it as IoT Hub creates one: empty
// documents at $version 1. s.twinMu must be held.
func (s *Server) twinLocked(id identity) *twinState {
	t := s.twins[id]
	if t == nil {
		t = &twinState{desired: map[string]any{}, reported: map[string]any{}, desiredVersion: 1, reportedVersion: 1, version: 1}
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
	if _, ok := s.keys(id.device, id.module); ok {
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
	tw := Twin{Desired: d, Reported: r, DesiredVersion: t.desiredVersion, ReportedVersion: t.reportedVersion, Version: t.version, ETag: t.etag()}
	if module == "" {
		tw.Tags, _ = json.Marshal(t.tags)
	}
	return tw, nil
}

// UpdateDesired merges patch into the desired properties (JSON merge: null
// deletes), bumps the desired $version and, if the module is connected and
// subscribed to $iothub/twin/PATCH/properties/desired/#, sends it the
// patch with "$version" (docs/edge-protocol.md#twin-and-methods-over-mqtt, #twin-reconciliation). Disconnected modules
// get nothing queued; they GET the twin when they reconnect.
func (s *Server) UpdateDesired(device, module string, patch json.RawMessage) (int64, error) {
	id := identity{device, module}
	p, err := decodePatch(patch)
	var v int64
	if err == nil {
		v, err = s.patchTwin(id, twinPatch{desired: p})
	}
	if err != nil {
		return 0, fmt.Errorf("update desired of %s: %w", id, err)
	}
	return v, nil
}

// twinPatch is a change of a twin: tags merged in (or, with replaceTags,
// replacing them; device twins only) and a desired patch merged in; nil
// leaves a part alone.
type twinPatch struct {
	tags        map[string]any
	replaceTags bool
	desired     map[string]any
	// ifMatch is the request's If-Match as ifMatch reads it: "" or "*"
	// for any twin, else the twin's ETag without its quotes
	// (ErrPreconditionFailed otherwise).
	ifMatch string
}

// patchTwin applies p to id's twin whole or not at all: both parts are
// checked against the twin limits first. A tag change reconciles the
// deployments; an $edgeAgent desired change, and any $edgeAgent a
// reconciliation changes, is judged by Config.Agent. It returns the new
// desired $version, 0 when p.desired is nil.
func (s *Server) patchTwin(id identity, p twinPatch) (int64, error) {
	if !s.known(id) {
		return 0, ErrUnknownIdentity
	}
	if p.tags != nil && id.module != "" {
		return 0, fmt.Errorf("%w: the emulator keeps tags on device twins only", ErrInvalidArgument)
	}
	s.deployMu.Lock()
	s.twinMu.Lock()
	t := s.twinLocked(id)
	tags, desired := t.tags, t.desired
	err := t.match(p.ifMatch)
	if err == nil && p.tags != nil {
		base := t.tags
		if p.replaceTags {
			base = map[string]any{}
		}
		tags, err = mergeChecked(base, p.tags)
	}
	if err == nil && p.desired != nil {
		desired, err = mergeChecked(t.desired, p.desired)
	}
	if err != nil {
		s.twinMu.Unlock()
		s.deployMu.Unlock()
		return 0, err
	}
	t.tags = tags
	if p.tags != nil && p.desired == nil { // setDesiredLocked counts a desired change
		t.version++
	}
	var v int64
	var runs []agentRun
	if p.desired != nil {
		v = s.setDesiredLocked(id, t, desired, p.desired)
		if id.module == edgeAgent {
			runs = append(runs, agentRun{device: id.device, version: v, desired: desired})
		}
	}
	s.twinMu.Unlock()
	if p.tags != nil {
		runs = append(runs, s.reconcileLocked()...)
	}
	s.deployMu.Unlock()
	s.runAgents(runs)
	return v, nil
}

// setDesiredLocked stores doc as id's desired properties, bumps $version
// and pushes patch (with "$version") to the module if it is connected and
// subscribed. s.twinMu must be held; patch is modified.
func (s *Server) setDesiredLocked(id identity, t *twinState, doc, patch map[string]any) int64 {
	t.desired = doc
	t.desiredVersion++
	t.version++
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

// agentRun is a Config.Agent call a change owes: device's $edgeAgent
// desired properties became desired, at $version version.
type agentRun struct {
	device  string
	version int64
	desired map[string]any
}

// runAgents has Config.Agent judge each run and reports its verdict on the
// $edgeAgent twin as edgeAgent does (lastDesiredVersion,
// lastDesiredStatus). Runs are serialised by s.agentMu, and one older than
// the twin's desired $version is skipped, so the reports never go
// backwards when changes race. No other lock may be held: Agent may read
// twins and configurations.
func (s *Server) runAgents(runs []agentRun) {
	if s.agent == nil {
		return
	}
	for _, r := range runs {
		s.runAgent(r)
	}
}

func (s *Server) runAgent(r agentRun) {
	s.agentMu.Lock()
	defer s.agentMu.Unlock()
	id := identity{r.device, edgeAgent}
	if r.version < s.desiredVersion(id) {
		return // a newer run follows
	}
	body, _ := json.Marshal(withVersion(r.desired, r.version))
	code := s.agent(r.device, body)
	description := ""
	if code != 200 {
		description = http.StatusText(code)
	}
	report := map[string]any{
		"lastDesiredVersion": json.Number(strconv.FormatInt(r.version, 10)),
		"lastDesiredStatus":  map[string]any{"code": json.Number(strconv.Itoa(code)), "description": description},
	}
	s.twinMu.Lock()
	defer s.twinMu.Unlock()
	t := s.twinLocked(id)
	if r.version < t.desiredVersion {
		return // changed while Agent judged; the run of the change reports
	}
	merge(t.reported, report)
	t.reportedVersion++
	t.version++
}

// desiredVersion returns the desired $version of id's twin.
func (s *Server) desiredVersion(id identity) int64 {
	s.twinMu.Lock()
	defer s.twinMu.Unlock()
	return s.twinLocked(id).desiredVersion
}

// SetTags replaces a device twin's tags with tags, a JSON object following
// the twin rules, and applies the automatic deployments again.
func (s *Server) SetTags(device string, tags json.RawMessage) error {
	p, err := decodePatch(tags)
	if err == nil {
		_, err = s.patchTwin(identity{device, ""}, twinPatch{tags: p, replaceTags: true})
	}
	if err != nil {
		return fmt.Errorf("set tags of %s: %w", device, err)
	}
	return nil
}

// twinGet answers $iothub/twin/GET with the desired and reported documents,
// each with its $version (docs/edge-protocol.md#twin-and-methods-over-mqtt).
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
	t.version++
	s.twinRespond(c, 204, rid, nil)
}

// twinRespond sends a twin response if the client subscribed to exactly
// $iothub/twin/res/# (SessionStateParser TwinResponseTopicFilter).
func (s *Server) twinRespond(c *conn, status int, rid string, body []byte) {
	topic := "$iothub/twin/res/" + strconv.Itoa(status) + "/?$rid=" + rid
	if s.loseTwinAnswer() {
		s.log.Info().Str("client", c.id.String()).Str("topic", topic).Msg("twin response lost (fault)")
		return
	}
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
// nested at most 10 deep (docs/edge-protocol.md#limits). Numbers keep their text.
func decodePatch(data []byte) (map[string]any, error) {
	var v any
	if err := decodeStrict(data, &v); err != nil {
		return nil, err
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

// checkTwinDoc applies the twin rules and the 32 KB limit to doc.
func checkTwinDoc(doc map[string]any) error {
	if err := checkTwinValue(doc, 1); err != nil {
		return err
	}
	return checkTwinSize(doc)
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
	if err := checkTwinSize(out); err != nil {
		return nil, err
	}
	return out, nil
}

func checkTwinSize(doc map[string]any) error {
	b, err := json.Marshal(doc)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrInvalidTwin, err)
	}
	if len(b) > maxTwinSize {
		return fmt.Errorf("%w: document would be %d bytes, limit %d", ErrInvalidTwin, len(b), maxTwinSize)
	}
	return nil
}

// withoutNulls returns a copy of doc without the null members of its
// objects, as merging it as a twin patch would store it.
func withoutNulls(doc map[string]any) map[string]any {
	out := map[string]any{}
	merge(out, doc)
	return out
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
