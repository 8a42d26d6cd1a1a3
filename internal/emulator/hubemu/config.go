package hubemu

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/edgetpm/edgetpm/internal/emulator/hubquery"
)

// Limits of configurations (docs/edge-protocol.md#iot-hub-service-api).
const (
	maxConfigIDLength = 128
	// maxConfigList is what GET /configurations returns at most: IoT Hub
	// overrides a larger top with 20.
	maxConfigList = 20
	// maxServiceBody bounds a service request body.
	maxServiceBody = 1 << 20
)

// desiredKey is the content key of a module's desired properties; layered
// deployments use desiredKey + "." + a path (docs/edge-protocol.md#deployments).
const desiredKey = "properties.desired"

// moduleName is the form of a module name in modulesContent (docs/edge-protocol.md#deployments).
var moduleName = regexp.MustCompile(`^[a-zA-Z0-9_-]+$`)

// configuration is an automatic deployment (docs/edge-protocol.md#iot-hub-service-api). Content
// never changes after creation; the other fields are under s.deployMu.
type configuration struct {
	id              string
	schemaVersion   string
	labels          map[string]string
	content         map[string]any // modulesContent: module → {key: value}
	layered         bool
	targetCondition string
	cond            *hubquery.Condition // nil: targets no device
	priority        int
	queries         map[string]string
	parsed          map[string]*hubquery.Query
	etag            string
	createdAt       time.Time
	updatedAt       time.Time
	seq             uint64          // creation order, for priority ties
	targeted        map[string]bool // devices, from the last reconciliation
	applied         map[string]bool // devices where it is in effect
}

// configBody is a PUT /configurations/{id} body.
type configBody struct {
	ID            string            `json:"id"`
	SchemaVersion string            `json:"schemaVersion"`
	Labels        map[string]string `json:"labels"`
	Content       struct {
		ModulesContent json.RawMessage `json:"modulesContent"`
		DeviceContent  json.RawMessage `json:"deviceContent"`
		ModuleContent  json.RawMessage `json:"moduleContent"`
	} `json:"content"`
	TargetCondition string `json:"targetCondition"`
	Priority        int    `json:"priority"`
	Metrics         struct {
		Queries map[string]string `json:"queries"`
	} `json:"metrics"`
}

// parseConfiguration checks a PUT /configurations/{id} body. Errors wrap
// ErrInvalidArgument.
func parseConfiguration(id string, body configBody) (*configuration, error) {
	if err := checkConfigID(id); err != nil {
		return nil, err
	}
	if body.ID != "" && body.ID != id {
		return nil, fmt.Errorf("%w: body id %q differs from the path's %q", ErrInvalidArgument, body.ID, id)
	}
	if body.Priority < 0 {
		return nil, fmt.Errorf("%w: priority %d is negative", ErrInvalidArgument, body.Priority)
	}
	for _, other := range []json.RawMessage{body.Content.DeviceContent, body.Content.ModuleContent} {
		if t := string(bytes.TrimSpace(other)); t != "" && t != "null" && t != "{}" {
			return nil, fmt.Errorf("%w: only content.modulesContent is supported (edge deployments)", ErrInvalidArgument)
		}
	}
	content, standard, _, err := parseModulesContent(body.Content.ModulesContent)
	if err != nil {
		return nil, err
	}
	if _, ok := content[edgeAgent]; !ok {
		return nil, fmt.Errorf("%w: modulesContent has no %s", ErrInvalidArgument, edgeAgent)
	}
	c := &configuration{
		id:              id,
		schemaVersion:   body.SchemaVersion,
		labels:          body.Labels,
		content:         content,
		layered:         !standard,
		targetCondition: body.TargetCondition,
		priority:        body.Priority,
		queries:         body.Metrics.Queries,
		parsed:          map[string]*hubquery.Query{},
	}
	if strings.TrimSpace(c.targetCondition) != "" {
		if c.cond, err = hubquery.ParseCondition(c.targetCondition); err != nil {
			return nil, fmt.Errorf("%w: targetCondition: %v", ErrInvalidArgument, err)
		}
	}
	for name, q := range c.queries {
		if name == "" {
			return nil, fmt.Errorf("%w: a metric query has no name", ErrInvalidArgument)
		}
		if c.parsed[name], err = hubquery.ParseQuery(q); err != nil {
			return nil, fmt.Errorf("%w: metric %q: %v", ErrInvalidArgument, name, err)
		}
	}
	return c, nil
}

// checkConfigID applies the documented id rules: at most 128 characters,
// lowercase (the CLI lowercases ids), no spaces, controls or
// & ^ [ ] { } \ | " < > /.
func checkConfigID(id string) error {
	if id == "" || len(id) > maxConfigIDLength {
		return fmt.Errorf("%w: configuration id must have 1 to %d characters", ErrInvalidArgument, maxConfigIDLength)
	}
	for _, r := range id {
		if r <= ' ' || r >= 0x7f || 'A' <= r && r <= 'Z' || strings.ContainsRune(`&^[]{}\|"<>/`, r) {
			return fmt.Errorf("%w: configuration id %q: character %q is not allowed (printable ASCII, no upper case, no space or & ^ [ ] { } \\ | \" < > /)", ErrInvalidArgument, id, r)
		}
	}
	return nil
}

// parseModulesContent reads modulesContent: module name → object whose
// keys are either all "properties.desired" (a standard deployment, the
// module's whole desired properties; standard is true) or all
// "properties.desired.<path>" (a layered one, docs/edge-protocol.md#deployments; dotted
// is true). Values follow the twin rules and the 32 KB limit; nulls inside
// objects are dropped, as merging a twin patch drops them, while a layered
// key's null value stays: it deletes the member.
func parseModulesContent(data json.RawMessage) (content map[string]any, standard, dotted bool, err error) {
	if len(bytes.TrimSpace(data)) == 0 {
		return nil, false, false, fmt.Errorf("%w: content.modulesContent is required", ErrInvalidArgument)
	}
	var raw map[string]any
	if err := decodeStrict(data, &raw); err != nil {
		return nil, false, false, fmt.Errorf("modulesContent: %w", err)
	}
	if raw == nil {
		return nil, false, false, fmt.Errorf("%w: modulesContent must be an object", ErrInvalidArgument)
	}
	for m, v := range raw {
		if m != edgeAgent && m != edgeHub && !moduleName.MatchString(m) {
			return nil, false, false, fmt.Errorf("%w: modulesContent: module name %q", ErrInvalidArgument, m)
		}
		entries, ok := v.(map[string]any)
		if !ok {
			return nil, false, false, fmt.Errorf("%w: modulesContent.%s must be an object", ErrInvalidArgument, m)
		}
		for k, x := range entries {
			if k == desiredKey {
				doc, ok := x.(map[string]any)
				if !ok {
					return nil, false, false, fmt.Errorf("%w: modulesContent.%s.%s must be an object", ErrInvalidArgument, m, k)
				}
				clean := withoutNulls(doc)
				if err := checkTwinDoc(clean); err != nil {
					return nil, false, false, fmt.Errorf("modulesContent.%s: %w", m, err)
				}
				entries[k] = clean
				standard = true
				continue
			}
			path, ok := strings.CutPrefix(k, desiredKey+".")
			if !ok {
				return nil, false, false, fmt.Errorf("%w: modulesContent.%s: key %q is neither %q nor %q", ErrInvalidArgument, m, k, desiredKey, desiredKey+".<path>")
			}
			segs := strings.Split(path, ".")
			if m == edgeAgent && segs[0] == "systemModules" {
				return nil, false, false, fmt.Errorf("%w: a layered deployment must not change systemModules", ErrInvalidArgument)
			}
			if doc, ok := x.(map[string]any); ok {
				x = withoutNulls(doc)
				entries[k] = x
			}
			if err := checkTwinDoc(pathDoc(segs, x)); err != nil {
				return nil, false, false, fmt.Errorf("modulesContent.%s.%s: %w", m, k, err)
			}
			dotted = true
		}
	}
	if standard && dotted {
		return nil, false, false, fmt.Errorf("%w: modulesContent mixes %q with layered %q keys", ErrInvalidArgument, desiredKey, desiredKey+".<path>")
	}
	return raw, standard, dotted, nil
}

// desiredDocs returns a copy of each module's "properties.desired" in
// modulesContent content (a standard deployment).
func desiredDocs(content map[string]any) map[string]map[string]any {
	docs := map[string]map[string]any{}
	for m, v := range content {
		if doc, ok := v.(map[string]any)[desiredKey].(map[string]any); ok {
			docs[m] = deepCopy(doc).(map[string]any)
		}
	}
	return docs
}

// pathDoc returns {segs[0]: {segs[1]: ... value}}.
func pathDoc(segs []string, value any) map[string]any {
	doc := map[string]any{segs[len(segs)-1]: value}
	for i := len(segs) - 2; i >= 0; i-- {
		doc = map[string]any{segs[i]: doc}
	}
	return doc
}

// decodeStrict decodes one JSON document, numbers kept as text, refusing
// anything after it. Errors wrap ErrInvalidArgument.
func decodeStrict(data []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("%w: body is not valid JSON: %v", ErrInvalidArgument, err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return fmt.Errorf("%w: data after the JSON document", ErrInvalidArgument)
	}
	return nil
}

// readJSON decodes a service request's body, at most maxServiceBody bytes,
// with decodeStrict.
func readJSON(r *http.Request, v any) error {
	data, err := io.ReadAll(io.LimitReader(r.Body, maxServiceBody))
	if err != nil {
		return fmt.Errorf("%w: reading the body: %v", ErrInvalidArgument, err)
	}
	return decodeStrict(data, v)
}

// configView is a configuration as IoT Hub returns it.
type configView struct {
	ID                 string            `json:"id"`
	SchemaVersion      string            `json:"schemaVersion"`
	Labels             map[string]string `json:"labels"`
	Content            contentView       `json:"content"`
	TargetCondition    string            `json:"targetCondition"`
	CreatedTimeUtc     string            `json:"createdTimeUtc"`
	LastUpdatedTimeUtc string            `json:"lastUpdatedTimeUtc"`
	Priority           int               `json:"priority"`
	SystemMetrics      metricsView       `json:"systemMetrics"`
	Metrics            metricsView       `json:"metrics"`
	Etag               string            `json:"etag"`
}

type contentView struct {
	ModulesContent map[string]any `json:"modulesContent"`
}

type metricsView struct {
	Results map[string]int    `json:"results"`
	Queries map[string]string `json:"queries"`
}

// viewLocked returns c as IoT Hub shows it, its metrics counted now.
// s.deployMu must be held.
func (s *Server) viewLocked(c *configuration) configView {
	v := configView{
		ID:                 c.id,
		SchemaVersion:      c.schemaVersion,
		Labels:             c.labels,
		Content:            contentView{ModulesContent: c.content},
		TargetCondition:    c.targetCondition,
		CreatedTimeUtc:     c.createdAt.UTC().Format(time.RFC3339Nano),
		LastUpdatedTimeUtc: c.updatedAt.UTC().Format(time.RFC3339Nano),
		Priority:           c.priority,
		SystemMetrics: metricsView{
			Results: map[string]int{"targetedCount": len(c.targeted), "appliedCount": len(c.applied)},
			Queries: map[string]string{
				"targetedCount": "SELECT deviceId FROM devices WHERE capabilities.iotEdge = true AND " + c.targetCondition,
				"appliedCount":  "SELECT deviceId FROM devices.modules WHERE moduleId = '$edgeAgent' AND configurations.[[" + c.id + "]].status = 'Applied'",
			},
		},
		Metrics: metricsView{Results: s.metricsLocked(c), Queries: c.queries},
		Etag:    c.etag,
	}
	if v.Labels == nil {
		v.Labels = map[string]string{}
	}
	if v.Metrics.Queries == nil {
		v.Metrics.Queries = map[string]string{}
	}
	return v
}

// nextETagLocked returns a new ETag, IoT Hub style (base64 of a number),
// different from every one given out before. s.deployMu must be held.
func (s *Server) nextETagLocked() string {
	s.etagSeq++
	return etagOf(s.etagSeq)
}

// etagOf is the ETag of number n, IoT Hub style: base64 of its digits.
func etagOf(n uint64) string {
	return base64.StdEncoding.EncodeToString([]byte(strconv.FormatUint(n, 10)))
}

// ifMatch reads a request's If-Match: "" when there is none, "*", or the
// ETag inside the quotes. IoT Hub wants the quotes (the SDKs add them; the
// JSON etag has none), so a bare ETag is an invalid argument.
func ifMatch(r *http.Request) (string, error) {
	h := strings.TrimSpace(r.Header.Get("If-Match"))
	if h == "" || h == "*" {
		return h, nil
	}
	if len(h) < 3 || h[0] != '"' || h[len(h)-1] != '"' || strings.Contains(h[1:len(h)-1], `"`) {
		return "", fmt.Errorf("%w: If-Match must be a quoted ETag or *", ErrInvalidArgument)
	}
	return h[1 : len(h)-1], nil
}

func writeConfig(w http.ResponseWriter, status int, v configView) {
	w.Header().Set("ETag", `"`+v.Etag+`"`)
	writeJSON(w, status, v)
}

// view returns c as IoT Hub shows it now.
func (s *Server) view(c *configuration) configView {
	s.deployMu.Lock()
	defer s.deployMu.Unlock()
	return s.viewLocked(c)
}

func (s *Server) servePutConfiguration(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	var body configBody
	err := readJSON(r, &body)
	var c *configuration
	if err == nil {
		c, err = parseConfiguration(id, body)
	}
	var match string
	if err == nil {
		match, err = ifMatch(r)
	}
	if err != nil {
		writeServiceError(w, fmt.Errorf("configuration %q: %w", id, err))
		return
	}
	s.deployMu.Lock()
	c, status, msg := s.putConfigurationLocked(c, match)
	var runs []agentRun
	if msg == "" {
		runs = s.reconcileLocked()
	}
	s.deployMu.Unlock()
	if msg != "" {
		writeError(w, status, msg)
		return
	}
	s.runAgents(runs)
	writeConfig(w, status, s.view(c))
}

// putConfigurationLocked creates c or, with If-Match value match, updates
// the configuration of the same id. It returns the stored configuration
// and the status to answer, or a status and an error message. s.deployMu
// must be held.
func (s *Server) putConfigurationLocked(c *configuration, match string) (stored *configuration, status int, msg string) {
	old := s.configs[c.id]
	now := s.now()
	switch {
	case old == nil && match != "" && match != "*":
		return nil, http.StatusNotFound, fmt.Sprintf("ErrorCode:ConfigurationNotFound;configuration %q does not exist", c.id)
	case old == nil:
		s.created++
		c.seq = s.created
		c.createdAt, c.updatedAt = now, now
		c.etag = s.nextETagLocked()
		s.configs[c.id] = c
		return c, http.StatusCreated, ""
	case match == "":
		return nil, http.StatusPreconditionFailed, fmt.Sprintf("ErrorCode:PreconditionFailed;configuration %q already exists; update it with If-Match", c.id)
	case match != "*" && match != old.etag:
		return nil, http.StatusPreconditionFailed, fmt.Sprintf("ErrorCode:PreconditionFailed;configuration %q has another ETag", c.id)
	case !reflect.DeepEqual(old.content, c.content):
		return nil, http.StatusBadRequest, fmt.Sprintf("ErrorCode:ArgumentInvalid;the content of configuration %q cannot be changed; create a new configuration", c.id)
	}
	old.labels, old.targetCondition, old.cond, old.priority = c.labels, c.targetCondition, c.cond, c.priority
	old.queries, old.parsed = c.queries, c.parsed
	old.updatedAt = now
	old.etag = s.nextETagLocked()
	return old, http.StatusOK, ""
}

func (s *Server) serveGetConfiguration(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	s.deployMu.Lock()
	defer s.deployMu.Unlock()
	c := s.configs[id]
	if c == nil {
		writeError(w, http.StatusNotFound, fmt.Sprintf("ErrorCode:ConfigurationNotFound;configuration %q does not exist", id))
		return
	}
	writeConfig(w, http.StatusOK, s.viewLocked(c))
}

func (s *Server) serveListConfigurations(w http.ResponseWriter, r *http.Request) {
	top := maxConfigList
	if t := r.URL.Query().Get("top"); t != "" {
		n, err := strconv.Atoi(t)
		if err != nil || n < 0 {
			writeError(w, http.StatusBadRequest, "ErrorCode:ArgumentInvalid;top must be a non-negative integer")
			return
		}
		if n > 0 && n < top {
			top = n
		}
	}
	s.deployMu.Lock()
	defer s.deployMu.Unlock()
	ids := slices.Sorted(maps.Keys(s.configs))
	out := []configView{}
	for _, id := range ids[:min(top, len(ids))] {
		out = append(out, s.viewLocked(s.configs[id]))
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) serveDeleteConfiguration(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	match, err := ifMatch(r)
	if err != nil {
		writeServiceError(w, fmt.Errorf("configuration %q: %w", id, err))
		return
	}
	s.deployMu.Lock()
	c := s.configs[id]
	var status int
	var msg string
	var runs []agentRun
	switch {
	case c == nil:
		status, msg = http.StatusNotFound, fmt.Sprintf("ErrorCode:ConfigurationNotFound;configuration %q does not exist", id)
	case match != "" && match != "*" && match != c.etag:
		status, msg = http.StatusPreconditionFailed, fmt.Sprintf("ErrorCode:PreconditionFailed;configuration %q has another ETag", id)
	default:
		delete(s.configs, id)
		runs = s.reconcileLocked()
	}
	s.deployMu.Unlock()
	if msg != "" {
		writeError(w, status, msg)
		return
	}
	s.runAgents(runs)
	w.WriteHeader(http.StatusNoContent)
}

// serveApplyContent sets one device's modules from {"modulesContent":
// {...}}: each module's "properties.desired" replaces its desired
// properties (docs/edge-protocol.md#deployments). Layered keys are refused: they need a
// base deployment to merge onto.
func (s *Server) serveApplyContent(w http.ResponseWriter, r *http.Request) {
	d := r.PathValue("d")
	var body struct {
		ModulesContent json.RawMessage `json:"modulesContent"`
	}
	err := readJSON(r, &body)
	var content map[string]any
	var dotted bool
	if err == nil {
		content, _, dotted, err = parseModulesContent(body.ModulesContent)
	}
	if err == nil && dotted {
		err = fmt.Errorf("%w: layered %q keys are only valid in layered deployments", ErrInvalidArgument, desiredKey+".<path>")
	}
	if err == nil && !s.known(identity{d, ""}) {
		err = ErrUnknownIdentity
	}
	if err != nil {
		writeServiceError(w, fmt.Errorf("apply configuration content to %s: %w", d, err))
		return
	}
	s.deployMu.Lock()
	run, err := s.setModulesLocked(d, desiredDocs(content))
	s.deployMu.Unlock()
	if err != nil {
		writeServiceError(w, fmt.Errorf("apply configuration content to %s: %w", d, err))
		return
	}
	s.runAgents(run)
	w.WriteHeader(http.StatusNoContent)
}
