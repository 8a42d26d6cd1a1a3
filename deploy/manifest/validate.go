package manifest

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"math"
	"slices"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf16"
)

// Error is one problem of a deployment: the JSON path of the value that
// breaks a rule, and the rule.
type Error struct {
	Path string // e.g. $.modulesContent['$edgeAgent']['properties.desired'].modules.relay.settings.image
	Msg  string
}

func (e *Error) Error() string { return e.Path + ": " + e.Msg }

// Limits of docs/edge-protocol.md#deployments and of IoT Hub's module twins.
const (
	maxChunkLen  = 512       // edgeAgent's TwinValueMaxSize, in .NET (UTF-16) characters
	maxChunks    = 100       // edgeAgent's TwinValueMaxChunks
	maxTwinBytes = 32 * 1024 // desired properties of one twin, serialized
	maxTwinDepth = 10        // levels of objects below properties.desired
)

// Validate checks a deployment, either the {"modulesContent": ...} that
// applyConfigurationContent takes or a whole Configuration body with
// "content": {"modulesContent": ...}, against docs/edge-protocol.md#deployments (a
// standard deployment) or docs/edge-protocol.md#deployments (a layered one: $edgeAgent is {} or
// content keys start with "properties.desired."). It returns nil or every
// problem, each an *Error, joined with errors.Join, in a stable order.
func Validate(doc []byte) error {
	v, err := decode(doc)
	if err != nil {
		return errors.Join(&Error{Path: "$", Msg: err.Error()})
	}
	var c checker
	c.document(v)
	return errors.Join(c.errs...)
}

// decode reads one JSON value, keeping numbers as written.
func decode(doc []byte) (any, error) {
	dec := json.NewDecoder(bytes.NewReader(doc))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, fmt.Errorf("not JSON: %w", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, errors.New("not JSON: data after the top-level value")
	}
	return v, nil
}

// checker collects problems.
type checker struct {
	errs []error
}

func (c *checker) add(path, msg string) {
	c.errs = append(c.errs, &Error{Path: path, Msg: msg})
}

func (c *checker) document(v any) {
	top, ok := c.object("$", v)
	if !ok {
		return
	}
	p := "$"
	if content, ok := top["content"]; ok && top["modulesContent"] == nil {
		// A Configuration body (docs/edge-protocol.md#iot-hub-service-api).
		p = "$.content"
		if top, ok = c.object(p, content); !ok {
			return
		}
	}
	mc, ok := top["modulesContent"]
	if !ok {
		c.add(child(p, "modulesContent"), "required")
		return
	}
	p = child(p, "modulesContent")
	m, ok := c.object(p, mc)
	if !ok {
		return
	}
	if _, ok := m["$edgeAgent"]; !ok {
		c.add(child(p, "$edgeAgent"), "required")
	}
	if isLayered(m) {
		c.layered(p, m)
	} else {
		c.standard(p, m)
	}
}

const layeredPrefix = "properties.desired."

// isLayered tells a layered deployment by its $edgeAgent, {}, or by content
// keys that are paths below properties.desired.
func isLayered(mc map[string]any) bool {
	if a, ok := mc["$edgeAgent"].(map[string]any); ok && len(a) == 0 {
		return true
	}
	for _, v := range mc {
		if m, ok := v.(map[string]any); ok {
			for k := range m {
				if strings.HasPrefix(k, layeredPrefix) {
					return true
				}
			}
		}
	}
	return false
}

func (c *checker) standard(p string, mc map[string]any) {
	if _, ok := mc["$edgeHub"]; !ok {
		c.add(child(p, "$edgeHub"), "required")
	}
	for _, name := range sortedKeys(mc) {
		sp := child(p, name)
		if name != "$edgeAgent" && name != "$edgeHub" && !validModuleName(name) {
			c.add(sp, "module names must match ^[a-zA-Z0-9_-]+$")
		}
		d, dp, ok := c.desired(sp, mc[name])
		if !ok {
			continue
		}
		c.twin(dp, d)
		switch name {
		case "$edgeAgent":
			c.edgeAgent(dp, d)
		case "$edgeHub":
			c.edgeHub(dp, d)
		}
	}
}

// desired returns a section's "properties.desired", its only key in a
// standard deployment.
func (c *checker) desired(p string, v any) (map[string]any, string, bool) {
	s, ok := c.object(p, v)
	if !ok {
		return nil, "", false
	}
	for _, k := range sortedKeys(s) {
		if k != "properties.desired" {
			c.add(child(p, k), `unknown key; want "properties.desired"`)
		}
	}
	dp := child(p, "properties.desired")
	dv, ok := s["properties.desired"]
	if !ok {
		c.add(dp, "required")
		return nil, "", false
	}
	d, ok := c.object(dp, dv)
	return d, dp, ok
}

func (c *checker) edgeAgent(p string, d map[string]any) {
	c.enum(d, p, "schemaVersion", true, "1.0", "1.1")
	if rt, rp, ok := c.objectField(d, p, "runtime", true); ok {
		c.enum(rt, rp, "type", true, "docker")
		if s, sp, ok := c.objectField(rt, rp, "settings", true); ok {
			c.registryCredentials(s, sp)
		}
	}
	if sys, sp, ok := c.objectField(d, p, "systemModules", true); ok {
		for _, name := range []string{"edgeAgent", "edgeHub"} {
			if _, ok := sys[name]; !ok {
				c.add(child(sp, name), "required")
			}
		}
		for _, name := range sortedKeys(sys) {
			switch name {
			case "edgeAgent", "edgeHub":
				c.module(child(sp, name), sys[name], name == "edgeAgent")
			default:
				c.add(child(sp, name), "unknown system module; want edgeAgent and edgeHub")
			}
		}
	}
	if mods, mp, ok := c.objectField(d, p, "modules", false); ok {
		c.modules(mp, mods)
	}
}

func (c *checker) modules(p string, mods map[string]any) {
	for _, name := range sortedKeys(mods) {
		if !validModuleName(name) {
			c.add(child(p, name), "module names must match ^[a-zA-Z0-9_-]+$")
		}
		c.module(child(p, name), mods[name], false)
	}
}

func (c *checker) registryCredentials(settings map[string]any, p string) {
	creds, cp, ok := c.objectField(settings, p, "registryCredentials", false)
	if !ok {
		return
	}
	for _, name := range sortedKeys(creds) {
		if cred, crp, ok := c.objectField(creds, cp, name, true); ok {
			c.str(cred, crp, "address", true)
			c.str(cred, crp, "username", true)
			c.str(cred, crp, "password", true)
		}
	}
}

// module checks a module of $edgeAgent (DockerModule.cs, IModule.cs).
func (c *checker) module(p string, v any, agent bool) {
	m, ok := c.object(p, v)
	if !ok {
		return
	}
	c.enum(m, p, "type", true, "docker")
	if agent {
		for _, k := range []string{"status", "restartPolicy", "startupOrder"} {
			if _, ok := m[k]; ok {
				c.add(child(p, k), "edgeAgent has no "+k)
			}
		}
	} else {
		c.enum(m, p, "status", false, "running", "stopped")
		c.enum(m, p, "restartPolicy", false, "never", "on-failure", "on-unhealthy", "always")
		c.integer(m, p, "startupOrder", false, 0, math.MaxUint32)
	}
	c.enum(m, p, "imagePullPolicy", false, "on-create", "never")
	if s, sp, ok := c.objectField(m, p, "settings", true); ok {
		c.str(s, sp, "image", true)
		c.createOptions(sp, s)
	}
	if env, ep, ok := c.objectField(m, p, "env", false); ok {
		c.env(ep, env)
	}
}

// createOptions checks the chunks createOptions, createOptions01, … that
// edgeAgent's DockerConfigJsonConverter concatenates in order.
func (c *checker) createOptions(p string, settings map[string]any) {
	chunks := map[int]string{}
	for _, k := range sortedKeys(settings) {
		suffix, ok := strings.CutPrefix(k, "createOptions")
		if !ok {
			continue
		}
		kp := child(p, k)
		i := chunkIndex(suffix)
		if i < 0 {
			c.add(kp, fmt.Sprintf("chunks are named createOptions and createOptions01 to createOptions%02d", maxChunks-1))
			continue
		}
		s, ok := settings[k].(string)
		if !ok {
			c.add(kp, "must be a string of Docker create options in JSON")
			continue
		}
		if n := utf16Len(s); n > maxChunkLen {
			c.add(kp, fmt.Sprintf("%d characters; a chunk holds at most %d, continue in createOptions01, createOptions02, …", n, maxChunkLen))
		}
		chunks[i] = s
	}
	if len(chunks) == 0 {
		return
	}
	var all strings.Builder
	for i := range len(chunks) {
		s, ok := chunks[i]
		if !ok {
			// Chunks after a gap are never read.
			c.add(child(p, chunkKey(i)), "required: chunks must be consecutive")
			return
		}
		all.WriteString(s)
	}
	if all.Len() == 0 {
		return
	}
	if b := []byte(all.String()); !json.Valid(b) || bytes.TrimLeft(b, " \t\r\n")[0] != '{' {
		c.add(child(p, "createOptions"), "chunks together must be a JSON object (Docker create options)")
	}
}

// chunkIndex returns the chunk number of a createOptions suffix, or -1.
func chunkIndex(suffix string) int {
	if suffix == "" {
		return 0
	}
	if len(suffix) != 2 || suffix[0] < '0' || suffix[0] > '9' || suffix[1] < '0' || suffix[1] > '9' || suffix == "00" {
		return -1
	}
	n, _ := strconv.Atoi(suffix)
	return n
}

func chunkKey(i int) string {
	if i == 0 {
		return "createOptions"
	}
	return fmt.Sprintf("createOptions%02d", i)
}

// utf16Len counts characters as .NET strings do.
func utf16Len(s string) int {
	n := 0
	for _, r := range s {
		n += utf16.RuneLen(r)
	}
	return n
}

func (c *checker) env(p string, env map[string]any) {
	for _, name := range sortedKeys(env) {
		np := child(p, name)
		if !validEnvName(name) {
			c.add(np, `names must match ^[^\+#$\s\.]+$`)
		}
		e, ok := env[name].(map[string]any)
		if !ok {
			c.add(np, `must be {"value": <string|number|bool>}`)
			continue
		}
		switch v := e["value"].(type) {
		case string, json.Number, bool:
		default:
			if v == nil {
				c.add(child(np, "value"), "required; a string, number or boolean")
			} else {
				c.add(child(np, "value"), "must be a string, number or boolean")
			}
		}
	}
}

func (c *checker) edgeHub(p string, d map[string]any) {
	schema := c.enum(d, p, "schemaVersion", true, "1.0", "1.1", "1.2", "1.3")
	if routes, rp, ok := c.objectField(d, p, "routes", true); ok {
		for _, name := range sortedKeys(routes) {
			c.route(child(rp, name), name, routes[name], schema)
		}
	}
	if sf, sp, ok := c.objectField(d, p, "storeAndForwardConfiguration", true); ok {
		c.storeAndForward(sp, sf, true)
	}
}

func (c *checker) storeAndForward(p string, sf map[string]any, required bool) {
	// Negative means forever (StoreAndForwardConfiguration.TimeToLive).
	c.integer(sf, p, "timeToLiveSecs", required, math.MinInt32, math.MaxInt32)
}

// route checks one route, a string or, from schema 1.1, an object
// (RouteSpec.cs). schema is "" when unknown, as in layered deployments.
func (c *checker) route(p, name string, v any, schema string) {
	if !validRouteName(name) {
		c.add(p, `route names must match ^[^\.\$# ]+$`)
	}
	switch r := v.(type) {
	case string:
		if _, err := parseRoute(r); err != nil {
			c.add(p, err.Error())
		}
	case map[string]any:
		if schema == "1.0" {
			c.add(p, "route objects need schemaVersion 1.1 or later")
		}
		if s, ok := c.str(r, p, "route", true); ok {
			if _, err := parseRoute(s); err != nil {
				c.add(child(p, "route"), err.Error())
			}
		}
		c.integer(r, p, "priority", false, 0, 9)
		c.integer(r, p, "timeToLiveSecs", false, 0, math.MaxUint32)
	default:
		c.add(p, `must be a route string or {"route": ..., "priority": 0-9, "timeToLiveSecs": ...}`)
	}
}

// twin checks what IoT Hub accepts in a twin's desired properties: size,
// keys, no arrays, depth.
func (c *checker) twin(p string, desired map[string]any) {
	c.twinSize(p, desired)
	c.twinValue(p, desired, 0)
}

func (c *checker) twinSize(p string, v any) {
	b, err := compact(v)
	if err == nil && len(b) > maxTwinBytes {
		c.add(p, fmt.Sprintf("%d bytes serialized; a twin's desired properties hold at most %d", len(b), maxTwinBytes))
	}
}

func (c *checker) twinValue(p string, v any, depth int) {
	switch v := v.(type) {
	case []any:
		c.add(p, "twins hold no arrays; use an object keyed by name")
	case map[string]any:
		if depth > maxTwinDepth {
			c.add(p, fmt.Sprintf("objects nest more than %d levels below properties.desired", maxTwinDepth))
			return
		}
		for _, k := range sortedKeys(v) {
			if !validTwinKey(k) {
				c.add(child(p, k), "twin keys must not be empty or hold '.', '$', spaces or control characters")
			}
			c.twinValue(child(p, k), v[k], depth+1)
		}
	}
}

// layered checks a layered deployment (docs/edge-protocol.md#deployments): dot-path keys below
// properties.desired, no system modules.
func (c *checker) layered(p string, mc map[string]any) {
	for _, name := range sortedKeys(mc) {
		sp := child(p, name)
		if name != "$edgeAgent" && name != "$edgeHub" && !validModuleName(name) {
			c.add(sp, "module names must match ^[a-zA-Z0-9_-]+$")
		}
		s, ok := c.object(sp, mc[name])
		if !ok {
			continue
		}
		c.twinSize(sp, s)
		for _, k := range sortedKeys(s) {
			kp := child(sp, k)
			if k == "properties.desired" && name != "$edgeAgent" && name != "$edgeHub" {
				// A module's whole desired properties, replacing lower layers'.
				if d, ok := c.object(kp, s[k]); ok {
					c.twinValue(kp, d, 0)
				}
				continue
			}
			rest, ok := strings.CutPrefix(k, layeredPrefix)
			if !ok {
				c.add(kp, `a layered deployment sets keys "properties.desired.<path>"`)
				continue
			}
			path := strings.Split(rest, ".")
			if !slices.ContainsFunc(path, func(s string) bool { return !validTwinKey(s) }) {
				c.twinValue(kp, s[k], len(path))
			} else {
				c.add(kp, "path segments must not be empty or hold '$', spaces or control characters")
			}
			switch name {
			case "$edgeAgent":
				c.layeredAgent(kp, path, s[k])
			case "$edgeHub":
				c.layeredHub(kp, path, s[k])
			}
		}
	}
}

func (c *checker) layeredAgent(p string, path []string, v any) {
	switch path[0] {
	case "systemModules":
		c.add(p, "a layered deployment must not set system modules")
	case "schemaVersion":
		c.enumValue(p, v, "1.0", "1.1")
	case "modules":
		switch len(path) {
		case 1:
			if mods, ok := c.object(p, v); ok {
				c.modules(p, mods)
			}
		case 2:
			if !validModuleName(path[1]) {
				c.add(p, "module names must match ^[a-zA-Z0-9_-]+$")
			}
			c.module(p, v, false)
		default:
			if !validModuleName(path[1]) {
				c.add(p, "module names must match ^[a-zA-Z0-9_-]+$")
			}
		}
	}
}

func (c *checker) layeredHub(p string, path []string, v any) {
	switch path[0] {
	case "schemaVersion":
		c.enumValue(p, v, "1.0", "1.1", "1.2", "1.3")
	case "routes":
		switch len(path) {
		case 1:
			if routes, ok := c.object(p, v); ok {
				for _, name := range sortedKeys(routes) {
					c.route(child(p, name), name, routes[name], "")
				}
			}
		case 2:
			c.route(p, path[1], v, "")
		}
	case "storeAndForwardConfiguration":
		switch {
		case len(path) == 1:
			if sf, ok := c.object(p, v); ok {
				c.storeAndForward(p, sf, false)
			}
		case len(path) == 2 && path[1] == "timeToLiveSecs":
			c.intValue(p, v, math.MinInt32, math.MaxInt32)
		}
	}
}

// object returns v as an object.
func (c *checker) object(p string, v any) (map[string]any, bool) {
	m, ok := v.(map[string]any)
	if !ok {
		c.add(p, "must be an object")
	}
	return m, ok
}

// objectField returns the object m[key] and its path.
func (c *checker) objectField(m map[string]any, p, key string, required bool) (map[string]any, string, bool) {
	kp := child(p, key)
	v, ok := m[key]
	if !ok {
		if required {
			c.add(kp, "required")
		}
		return nil, kp, false
	}
	o, ok := c.object(kp, v)
	return o, kp, ok
}

// field returns m[key] and its path; a missing required key is a problem.
func (c *checker) field(m map[string]any, p, key string, required bool) (any, string, bool) {
	kp := child(p, key)
	v, ok := m[key]
	if !ok && required {
		c.add(kp, "required")
	}
	return v, kp, ok
}

// str returns the non-empty string m[key].
func (c *checker) str(m map[string]any, p, key string, required bool) (string, bool) {
	v, kp, ok := c.field(m, p, key, required)
	if !ok {
		return "", false
	}
	return c.strValue(kp, v)
}

func (c *checker) strValue(p string, v any) (string, bool) {
	s, ok := v.(string)
	switch {
	case !ok:
		c.add(p, "must be a string")
	case s == "":
		c.add(p, "must not be empty")
		return "", false
	}
	return s, ok
}

// enum returns m[key] when it is one of choices.
func (c *checker) enum(m map[string]any, p, key string, required bool, choices ...string) string {
	v, kp, ok := c.field(m, p, key, required)
	if !ok {
		return ""
	}
	return c.enumValue(kp, v, choices...)
}

func (c *checker) enumValue(p string, v any, choices ...string) string {
	s, ok := c.strValue(p, v)
	if !ok {
		return ""
	}
	if !slices.Contains(choices, s) {
		c.add(p, fmt.Sprintf("%q is not one of %s", s, strings.Join(choices, ", ")))
		return ""
	}
	return s
}

// integer checks that m[key] is an integer in [lo, hi].
func (c *checker) integer(m map[string]any, p, key string, required bool, lo, hi int64) {
	if v, kp, ok := c.field(m, p, key, required); ok {
		c.intValue(kp, v, lo, hi)
	}
}

func (c *checker) intValue(p string, v any, lo, hi int64) {
	n, ok := v.(json.Number)
	i, err := strconv.ParseInt(n.String(), 10, 64)
	if !ok || err != nil || i < lo || i > hi {
		c.add(p, fmt.Sprintf("must be an integer from %d to %d", lo, hi))
	}
}

// child is the JSON path of key in the object at p.
func child(p, key string) string {
	if isIdent(key) {
		return p + "." + key
	}
	return p + "['" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(key) + "']"
}

func isIdent(s string) bool {
	for i, r := range s {
		if !(r == '_' || 'a' <= r && r <= 'z' || 'A' <= r && r <= 'Z' || i > 0 && '0' <= r && r <= '9') {
			return false
		}
	}
	return s != ""
}

func sortedKeys(m map[string]any) []string { return slices.Sorted(maps.Keys(m)) }

func validModuleName(s string) bool {
	for _, r := range s {
		if !(r == '_' || r == '-' || 'a' <= r && r <= 'z' || 'A' <= r && r <= 'Z' || '0' <= r && r <= '9') {
			return false
		}
	}
	return s != ""
}

func validRouteName(s string) bool {
	return s != "" && !strings.ContainsAny(s, ".$# ")
}

func validEnvName(s string) bool {
	return s != "" && !strings.ContainsFunc(s, func(r rune) bool { return strings.ContainsRune("+#$.", r) || unicode.IsSpace(r) })
}

// validTwinKey follows IoT Hub: no '.', '$', space or control characters.
func validTwinKey(s string) bool {
	return s != "" && !strings.ContainsFunc(s, func(r rune) bool { return strings.ContainsRune(".$ ", r) || unicode.IsControl(r) })
}

// compact serializes v without HTML escapes, as IoT Hub stores it.
func compact(v any) ([]byte, error) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(b.Bytes(), []byte("\n")), nil
}
