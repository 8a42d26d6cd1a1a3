package manifest

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"unicode/utf8"
)

// relayTemplate is a standard deployment whose relay module is filled
// from values.
const relayTemplate = `{"modulesContent": {
  "$edgeAgent": {"properties.desired": {
    "schemaVersion": "1.1",
    "runtime": {"type": "docker", "settings": {}},
    "systemModules": {
      "edgeAgent": {"type": "docker", "settings": {"image": "mcr.microsoft.com/azureiotedge-agent:1.5"}},
      "edgeHub": {"type": "docker", "settings": {"image": "mcr.microsoft.com/azureiotedge-hub:1.5"}}
    },
    "modules": {"relay": {"type": "docker",
      "env": {"A": "x", "B": 3, "C": {"value": true}},
      "settings": {"image": "{{ .image }}", "createOptions": {"Env": {{ json .env }}, "Labels": {"k": "<&>"}}, "createOptions07": "stale"}}}
  }},
  "$edgeHub": {"properties.desired": {"schemaVersion": "1.2", "routes": {}, "storeAndForwardConfiguration": {"timeToLiveSecs": 10}}}
}}`

func TestRenderNormalizes(t *testing.T) {
	env := strings.Repeat("x", 1000)
	vals := Values{"image": "ghcr.io/edgetpm/edge-relay:0.1.0", "env": env,
		"digests": map[string]any{"ghcr.io/edgetpm/edge-relay:0.1.0": "sha256:" + strings.Repeat("0f", 32)}}
	out, err := Render([]byte(relayTemplate), vals)
	if err != nil {
		t.Fatalf("Render = %v", err)
	}
	var d map[string]any
	if err := json.Unmarshal(out, &d); err != nil {
		t.Fatal(err)
	}
	m := relay(d)
	s := at(m, "settings")
	if want := "ghcr.io/edgetpm/edge-relay:0.1.0@sha256:" + strings.Repeat("0f", 32); s["image"] != want {
		t.Errorf("image = %v, want %s", s["image"], want)
	}
	var all string
	for i := range 3 {
		chunk, _ := s[chunkKey(i)].(string)
		if i < 2 && utf16Len(chunk) != maxChunkLen || chunk == "" {
			t.Errorf("%s = %d characters, want a full chunk or the rest", chunkKey(i), utf16Len(chunk))
		}
		all += chunk
	}
	if want := `{"Env":"` + env + `","Labels":{"k":"<&>"}}`; all != want {
		t.Errorf("createOptions chunks = %s, want %s", all, want)
	}
	if _, ok := s["createOptions07"]; ok {
		t.Error("a stale createOptions07 survived")
	}
	wantEnv := map[string]any{"A": map[string]any{"value": "x"}, "B": map[string]any{"value": 3.0}, "C": map[string]any{"value": true}}
	if !reflect.DeepEqual(m["env"], wantEnv) {
		t.Errorf("env = %v, want %v", m["env"], wantEnv)
	}
	if !strings.HasSuffix(string(out), "}\n") || !strings.Contains(string(out), "\n  \"modulesContent\": {\n") {
		t.Errorf("Render output is not indented JSON:\n%s", out)
	}
}

func TestRenderLayered(t *testing.T) {
	tmpl := `{"modulesContent": {"$edgeAgent": {
	  "properties.desired.modules.relay": {"type": "docker", "env": {"X": 1}, "settings": {"image": "r:1", "createOptions": {}}}}}}`
	out, err := Render([]byte(tmpl), Values{})
	if err != nil {
		t.Fatalf("Render = %v", err)
	}
	want := `{
  "modulesContent": {
    "$edgeAgent": {
      "properties.desired.modules.relay": {
        "env": {
          "X": {
            "value": 1
          }
        },
        "settings": {
          "createOptions": "{}",
          "image": "r:1"
        },
        "type": "docker"
      }
    }
  }
}
`
	if string(out) != want {
		t.Errorf("Render = %s, want %s", out, want)
	}
}

// A Configuration body is normalized too, in each place modules are.
func TestRenderConfiguration(t *testing.T) {
	tmpl := `{"id": "x", "content": {"modulesContent": {"$edgeAgent": {
	  "properties.desired.modules": {"a": {"type": "docker", "env": {"X": "1"}, "settings": {"image": "a:1", "createOptions": {"B": 1}}}}}}}}`
	out, err := Render([]byte(tmpl), Values{})
	if err != nil {
		t.Fatalf("Render = %v", err)
	}
	for _, want := range []string{`"createOptions": "{\"B\":1}"`, `"value": "1"`} {
		if !strings.Contains(string(out), want) {
			t.Errorf("Render = %s, want it to hold %s", out, want)
		}
	}
}

func TestRenderErrors(t *testing.T) {
	for _, tc := range []struct {
		name, tmpl string
		vals       Values
		want       string
	}{
		{"template syntax", `{{ .x `, nil, "parse template: "},
		{"missing key", `{"a": {{ json .nothere }}}`, Values{}, `execute template: `},
		{"not JSON", "{\n\"a\": {{ .x }}\n}", Values{"x": "bare"}, "rendered template, line 2: not JSON: invalid character 'b'"},
		{"bad digest", `{}`, Values{"digests": map[string]any{"r:1": "md5:00"}}, `values: digests["r:1"] = md5:00: want sha256:<64 lowercase hex digits>`},
		{"digests not a table", `{}`, Values{"digests": "x"}, `values: "digests" must be a table`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, err := Render([]byte(tc.tmpl), tc.vals)
			if err == nil || !strings.Contains(err.Error(), tc.want) || out != nil {
				t.Errorf("Render(%q) = %q, %v, want an error with %q", tc.tmpl, out, err, tc.want)
			}
		})
	}
}

// A rendered deployment that breaks a rule comes back with the problems.
func TestRenderValidates(t *testing.T) {
	out, err := Render([]byte(`{"modulesContent": {"$edgeAgent": {}, "relay": {"properties.desired.x": {{ json .x }}}}}`), Values{"x": []any{1}})
	var ve *Error
	if !errors.As(err, &ve) || ve.Path != "$.modulesContent.relay['properties.desired.x']" || out == nil {
		t.Errorf("Render = %s, %v, want the output and an *Error at properties.desired.x", out, err)
	}
}

func TestSplitChunks(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []int // UTF-16 lengths
	}{
		{"", []int{0}},
		{strings.Repeat("a", 512), []int{512}},
		{strings.Repeat("a", 513), []int{512, 1}},
		{strings.Repeat("é", 1024), []int{512, 512}},
		{"a" + strings.Repeat("😀", 256), []int{511, 2}}, // a pair is never cut
	} {
		got := splitChunks(tc.in)
		var lens []int
		for _, c := range got {
			lens = append(lens, utf16Len(c))
			if !utf8.ValidString(c) {
				t.Errorf("splitChunks cut a character: %q", c)
			}
		}
		if !reflect.DeepEqual(lens, tc.want) || strings.Join(got, "") != tc.in {
			t.Errorf("splitChunks(%d bytes) lengths = %v, want %v", len(tc.in), lens, tc.want)
		}
	}
}

func TestSetValue(t *testing.T) {
	vals := Values{"n": int64(1), "f": 1.5, "b": false, "j": json.Number("2"), "s": "x", "t": map[string]any{"k": "v"}}
	for _, tc := range []struct {
		key, value string
		want       any
	}{
		{"n", "0x10", int64(16)},
		{"f", "2.5", 2.5},
		{"b", "true", true},
		{"j", "3e2", json.Number("3e2")},
		{"s", "7", "7"},
		{"t.k", "w", "w"},
		{"new.deep.key", "v", "v"},
	} {
		if err := SetValue(vals, tc.key, tc.value); err != nil {
			t.Errorf("SetValue(%q, %q) = %v", tc.key, tc.value, err)
			continue
		}
		var got any = map[string]any(vals)
		for _, k := range strings.Split(tc.key, ".") {
			got = got.(map[string]any)[k]
		}
		if got != tc.want {
			t.Errorf("after SetValue(%q, %q): %#v, want %#v", tc.key, tc.value, got, tc.want)
		}
	}
	for _, tc := range []struct{ key, value, want string }{
		{"n", "one", `set "n": strconv.ParseInt`},
		{"b", "yes", `set "b": strconv.ParseBool`},
		{"j", "NaN", `set "j": "NaN" is not a JSON number`},
		{"s.x", "1", `set "s.x": s is not a table`},
		{"t", "flat", `set "t": it is a table or list`},
		{"t..k", "1", `set "t..k": empty key`},
		{"", "1", `set "": empty key`},
	} {
		if err := SetValue(vals, tc.key, tc.value); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("SetValue(%q, %q) = %v, want %q", tc.key, tc.value, err, tc.want)
		}
	}
}

func TestLoadValues(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	want := Values{"relay": map[string]any{"image": "r:1", "inFlight": int64(32)}}
	got, err := LoadValues(write("v.toml", "[relay]\nimage = \"r:1\"\ninFlight = 32\n"))
	if err != nil || !reflect.DeepEqual(got, want) {
		t.Errorf("LoadValues(v.toml) = %#v, %v, want %#v", got, err, want)
	}
	want = Values{"relay": map[string]any{"image": "r:1", "inFlight": json.Number("32")}}
	got, err = LoadValues(write("v.json", `{"relay": {"image": "r:1", "inFlight": 32}}`))
	if err != nil || !reflect.DeepEqual(got, want) {
		t.Errorf("LoadValues(v.json) = %#v, %v, want %#v", got, err, want)
	}
	for _, tc := range []struct{ name, content, want string }{
		{"v.yaml", "a: 1", "want a .toml or .json file"},
		{"bad.toml", "a = ", "bad.toml: "},
		{"bad.json", "[1]", "bad.json: json: cannot unmarshal array"},
	} {
		if _, err := LoadValues(write(tc.name, tc.content)); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("LoadValues(%s) = %v, want %q", tc.name, err, tc.want)
		}
	}
	if _, err := LoadValues(filepath.Join(dir, "none.toml")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("LoadValues(none.toml) = %v, want os.ErrNotExist", err)
	}
}

func TestSet(t *testing.T) {
	vals := map[string]any{"s": "x"}
	if err := Set(vals, "a.b", json.Number("3")); err != nil || vals["a"].(map[string]any)["b"] != json.Number("3") {
		t.Errorf("Set(a.b) = %v, vals %v", err, vals)
	}
	if err := Set(vals, "s.x", 1); err == nil || !strings.Contains(err.Error(), "s is not a table") {
		t.Errorf("Set under a string: %v", err)
	}
	if err := Set(vals, "a..b", 1); err == nil || !strings.Contains(err.Error(), "empty key") {
		t.Errorf("Set with an empty part: %v", err)
	}
}
