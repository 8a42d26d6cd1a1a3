package manifest

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"text/template"
	"unicode/utf16"

	"github.com/pelletier/go-toml/v2"
)

// Values fill a deployment template: a tree of maps as TOML or JSON
// decode it. The key "digests", when set, maps image references
// ("repo:tag") to the digests ("sha256:…") Render pins them to.
type Values map[string]any

// LoadValues reads values from a .toml or .json file.
func LoadValues(path string) (Values, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	vals := Values{}
	switch filepath.Ext(path) {
	case ".toml":
		err = toml.Unmarshal(b, &vals)
	case ".json":
		dec := json.NewDecoder(bytes.NewReader(b))
		dec.UseNumber()
		err = dec.Decode(&vals)
	default:
		return nil, fmt.Errorf("values %s: want a .toml or .json file", path)
	}
	if err != nil {
		return nil, fmt.Errorf("values %s: %w", path, err)
	}
	return vals, nil
}

// SetValue sets the dotted key (as in "relay.desired.logLevel") to value,
// creating the tables on the way. A value that replaces a number or a
// boolean is parsed as one, so overrides keep the type the file gave.
func SetValue(vals Values, key, value string) error {
	m, last, err := table(vals, key)
	if err != nil {
		return err
	}
	v, err := typed(m[last], value)
	if err != nil {
		return fmt.Errorf("set %q: %w", key, err)
	}
	m[last] = v
	return nil
}

// Set sets the dotted key to v as it is, creating the tables on the way.
func Set(vals map[string]any, key string, v any) error {
	m, last, err := table(vals, key)
	if err != nil {
		return err
	}
	m[last] = v
	return nil
}

// table returns the table that holds the dotted key, made where missing,
// and the key's last part.
func table(vals map[string]any, key string) (map[string]any, string, error) {
	parts := strings.Split(key, ".")
	m := vals
	for i, k := range parts {
		if k == "" {
			return nil, "", fmt.Errorf("set %q: empty key", key)
		}
		if i == len(parts)-1 {
			break
		}
		next, ok := m[k]
		if !ok {
			next = map[string]any{}
			m[k] = next
		}
		if m, ok = next.(map[string]any); !ok {
			return nil, "", fmt.Errorf("set %q: %s is not a table", key, strings.Join(parts[:i+1], "."))
		}
	}
	return m, parts[len(parts)-1], nil
}

// typed parses s as the type of old.
func typed(old any, s string) (any, error) {
	switch old.(type) {
	case int64:
		return strconv.ParseInt(s, 0, 64)
	case float64:
		return strconv.ParseFloat(s, 64)
	case bool:
		return strconv.ParseBool(s)
	case json.Number:
		if _, err := strconv.ParseFloat(s, 64); err != nil || !json.Valid([]byte(s)) {
			return nil, fmt.Errorf("%q is not a JSON number", s)
		}
		return json.Number(s), nil
	case map[string]any, []any:
		return nil, fmt.Errorf("it is a table or list: set a key inside it")
	}
	return s, nil
}

// Render executes a deployment template, a JSON file with text/template
// actions ({{ .relay.image }}, {{ json .relay.desired }}, where json
// writes any value as JSON), with vals as data; a missing key is an
// error. It then normalizes the JSON: a module's settings.createOptions
// given as an object becomes compact JSON split into the 512-character
// chunks createOptions, createOptions01, …; env values that are not
// objects become {"value": v}; images listed in vals["digests"] are pinned
// as repo:tag@sha256:…. The result is indented JSON with sorted keys. When
// the result breaks a rule of Validate, Render returns it together with
// Validate's error.
func Render(tmpl []byte, vals Values) ([]byte, error) {
	digests, err := digestsOf(vals)
	if err != nil {
		return nil, err
	}
	t, err := template.New("deployment").Option("missingkey=error").
		Funcs(template.FuncMap{"json": toJSON}).Parse(string(tmpl))
	if err != nil {
		return nil, fmt.Errorf("parse template: %w", err)
	}
	var b bytes.Buffer
	if err := t.Execute(&b, vals); err != nil {
		return nil, fmt.Errorf("execute template: %w", err)
	}
	doc, err := decode(b.Bytes())
	if err != nil {
		line := 0
		if se := (*json.SyntaxError)(nil); errors.As(err, &se) {
			line = bytes.Count(b.Bytes()[:se.Offset], []byte("\n")) + 1
		}
		return nil, fmt.Errorf("rendered template, line %d: %w", line, err)
	}
	if err := normalize(doc, digests); err != nil {
		return nil, err
	}
	var out bytes.Buffer
	enc := json.NewEncoder(&out)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(doc); err != nil {
		return nil, fmt.Errorf("encode deployment: %w", err)
	}
	return out.Bytes(), Validate(out.Bytes())
}

func toJSON(v any) (string, error) {
	b, err := compact(v)
	return string(b), err
}

func digestsOf(vals Values) (map[string]string, error) {
	v, ok := vals["digests"]
	if !ok {
		return nil, nil
	}
	m, ok := v.(map[string]any)
	if !ok {
		return nil, errors.New(`values: "digests" must be a table of image reference to digest`)
	}
	out := make(map[string]string, len(m))
	for ref, d := range m {
		s, _ := d.(string)
		hex, ok := strings.CutPrefix(s, "sha256:")
		if !ok || len(hex) != 64 || strings.Trim(hex, "0123456789abcdef") != "" {
			return nil, fmt.Errorf("values: digests[%q] = %v: want sha256:<64 lowercase hex digits>", ref, d)
		}
		out[ref] = s
	}
	return out, nil
}

// normalize rewrites the modules of $edgeAgent, in the standard
// (properties.desired.{systemModules,modules}) and the layered
// (properties.desired.modules[.<name>]) forms, in place. Anything that is
// not where Validate wants it is left for Validate to name.
func normalize(doc any, digests map[string]string) error {
	top, _ := doc.(map[string]any)
	if content, ok := top["content"].(map[string]any); ok && top["modulesContent"] == nil {
		top = content
	}
	mc, _ := top["modulesContent"].(map[string]any)
	agent, _ := mc["$edgeAgent"].(map[string]any)
	var modules []any
	for k, v := range agent {
		switch name, layered := strings.CutPrefix(k, "properties.desired.modules."); {
		case k == "properties.desired":
			d, _ := v.(map[string]any)
			for _, group := range []string{"systemModules", "modules"} {
				mods, _ := d[group].(map[string]any)
				for _, m := range mods {
					modules = append(modules, m)
				}
			}
		case k == "properties.desired.modules":
			mods, _ := v.(map[string]any)
			for _, m := range mods {
				modules = append(modules, m)
			}
		case layered && !strings.Contains(name, "."):
			modules = append(modules, v)
		}
	}
	for _, m := range modules {
		if err := normalizeModule(m, digests); err != nil {
			return err
		}
	}
	return nil
}

func normalizeModule(v any, digests map[string]string) error {
	m, _ := v.(map[string]any)
	if s, ok := m["settings"].(map[string]any); ok {
		if opts, ok := s["createOptions"].(map[string]any); ok {
			b, err := compact(opts)
			if err != nil {
				return fmt.Errorf("encode createOptions: %w", err)
			}
			for k := range s {
				if strings.HasPrefix(k, "createOptions") {
					delete(s, k)
				}
			}
			for i, chunk := range splitChunks(string(b)) {
				s[chunkKey(i)] = chunk
			}
		}
		if img, ok := s["image"].(string); ok && !strings.Contains(img, "@") {
			if d, ok := digests[img]; ok {
				s["image"] = img + "@" + d
			}
		}
	}
	if env, ok := m["env"].(map[string]any); ok {
		for k, e := range env {
			if _, ok := e.(map[string]any); !ok {
				env[k] = map[string]any{"value": e}
			}
		}
	}
	return nil
}

// splitChunks cuts s into pieces of at most maxChunkLen UTF-16 units,
// never inside a character.
func splitChunks(s string) []string {
	var chunks []string
	start, units := 0, 0
	for i, r := range s {
		n := utf16.RuneLen(r)
		if units+n > maxChunkLen {
			chunks = append(chunks, s[start:i])
			start, units = i, 0
		}
		units += n
	}
	return append(chunks, s[start:])
}
