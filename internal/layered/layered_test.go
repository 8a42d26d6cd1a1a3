package layered

import (
	"errors"
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

type toy struct {
	Name  string   `toml:"name"`
	Wait  bool     `toml:"wait"`
	Tags  []string `toml:"tags"`
	Every Duration `toml:"every"`
}

func (t *toy) Validate() error {
	if t.Name == "" {
		return errors.New("name: must not be empty")
	}
	return nil
}

func (t *toy) fields() []Field {
	return []Field{
		{Key: "name", Env: "TOY_NAME", Flag: "name", Usage: "`NAME`", Value: StringVar(&t.Name)},
		{Key: "wait", Env: "TOY_WAIT", Flag: "no-wait", Usage: "do not wait", Value: NegatedBoolVar(&t.Wait)},
		{Key: "tags", Env: "TOY_TAGS", Flag: "tag", Usage: "`TAG`, repeatable", Value: ListVar(&t.Tags)},
		{Key: "every", Env: "TOY_EVERY", Usage: "no flag", Value: DurationVar(&t.Every)},
	}
}

// load layers file (none when empty), env and args over the defaults.
func load(t *testing.T, file string, env map[string]string, args ...string) (*toy, *Loader, error) {
	t.Helper()
	s := &toy{Name: "default", Wait: true}
	fs := flag.NewFlagSet("toy", flag.ContinueOnError)
	fs.SetOutput(new(strings.Builder))
	l := NewLoader(fs, s, File{Env: "TOY_CONFIG"}, s.fields())
	if file != "" {
		path := filepath.Join(t.TempDir(), "toy.toml")
		if err := os.WriteFile(path, []byte(file), 0o600); err != nil {
			t.Fatal(err)
		}
		args = append([]string{"--config", path}, args...)
	}
	if err := fs.Parse(args); err != nil {
		return nil, nil, err
	}
	return s, l, l.Load(func(k string) string { return env[k] })
}

func TestLayers(t *testing.T) {
	const file = "name = \"file\"\nwait = false\ntags = [\"a\"]\nevery = \"2m\"\n"
	for _, tc := range []struct {
		name string
		file string
		env  map[string]string
		args []string
		want toy
	}{
		{"defaults", "", nil, nil, toy{Name: "default", Wait: true}},
		{"file", file, nil, nil, toy{"file", false, []string{"a"}, Duration(120e9)}},
		{"env over file", file, map[string]string{"TOY_NAME": "env", "TOY_WAIT": "true", "TOY_TAGS": "b, c", "TOY_EVERY": "1s"}, nil, toy{"env", true, []string{"b", "c"}, Duration(1e9)}},
		{"flags over env", file, map[string]string{"TOY_NAME": "env", "TOY_TAGS": "b"}, []string{"--name", "flag", "--tag", "d", "--tag", "e", "--no-wait"}, toy{"flag", false, []string{"d", "e"}, Duration(120e9)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, _, err := load(t, tc.file, tc.env, tc.args...)
			if err != nil || !reflect.DeepEqual(*s, tc.want) {
				t.Errorf("Load = %+v, %v; want %+v", s, err, tc.want)
			}
		})
	}
	if _, l, err := load(t, "", nil, "--name", "x"); err != nil || !l.Given("name") || l.Given("tag") {
		t.Errorf("Given after --name: %v, name %v, tag %v", err, l.Given("name"), l.Given("tag"))
	}
}

func TestErrors(t *testing.T) {
	for _, tc := range []struct {
		file string
		env  map[string]string
		args []string
		want string
	}{
		{"name = \"x\"\nnmae = \"y\"\n", nil, nil, `toy.toml:2:1: unknown key "nmae"`},
		{"every = \"soon\"\n", nil, nil, "toy.toml:1:"},
		{"", map[string]string{"TOY_WAIT": "maybe"}, nil, `$TOY_WAIT="maybe": want true or false`},
		{"", map[string]string{"TOY_CONFIG": "/nonexistent/toy.toml"}, nil, "read settings"},
		{"", nil, []string{"--name", ""}, "name: must not be empty"},
	} {
		_, _, err := load(t, tc.file, tc.env, tc.args...)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Load(%q, %v, %q) = %v, want an error with %q", tc.file, tc.env, tc.args, err, tc.want)
		}
		var fe *FileError
		if strings.Contains(tc.want, "toy.toml:") && !errors.As(err, &fe) {
			t.Errorf("Load(%q) = %v, want a *FileError", tc.file, err)
		}
	}
}

// A duration is a Go duration string; a bare number is seconds only where
// the key's name says so, and refused with the fix everywhere else.
func TestDurations(t *testing.T) {
	type timed struct {
		Every Duration `toml:"every"`
		Grace Duration `toml:"grace_sec"`
		Sub   struct {
			Wait Duration `toml:"wait_secs"`
		} `toml:"sub"`
	}
	for _, tc := range []struct {
		file string
		want timed
		err  string
	}{
		{"every = \"90s\"\ngrace_sec = \"2m\"\n", timed{Every: Duration(90e9), Grace: Duration(120e9)}, ""},
		{"grace_sec = 30\n[sub]\nwait_secs = 0x10\n", timed{Grace: Duration(30e9), Sub: struct {
			Wait Duration `toml:"wait_secs"`
		}{Duration(16e9)}}, ""},
		{"every = 30\n", timed{}, `t.toml:1:9: every: want a duration such as "300s", not 30`},
		{"grace_sec = 1.5\n", timed{}, `t.toml:1:13: grace_sec: want a duration such as "300s" or a whole number of seconds, not 1.5`},
		{"grace_sec = 9223372036854775807\n", timed{}, "t.toml:1:13: grace_sec: want"},
		{"grace_sec = -3\n", timed{}, "t.toml:1:13: grace_sec: want"},
	} {
		var got timed
		err := Parse("t.toml", []byte(tc.file), &got)
		if tc.err == "" && (err != nil || got != tc.want) {
			t.Errorf("Parse(%q) = %+v, %v; want %+v", tc.file, got, err, tc.want)
		}
		if tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)) {
			t.Errorf("Parse(%q) = %v, want an error with %q", tc.file, err, tc.err)
		}
	}
}

// Keys below values and tables that are values are refused where they
// are written, once.
func TestShapes(t *testing.T) {
	for file, want := range map[string]string{
		"name.first = \"x\"\n":        `t.toml:1:1: name.first: below name, which is not a table`,
		"[name]\nfirst = \"x\"\n":     `t.toml:1:2: [name]: name is a value (name = …), not a table`,
		"[[tags]]\n":                  `t.toml:1:3: [tags]: tags is a value`,
		"[nope]\nx = 1\n":             `t.toml:1:2: unknown table [nope]; the file takes name, wait, tags, every`,
		"tags = [\"a\",\n  2]\n":      `t.toml:1:8: tags: want a list of strings`,
		"wait = \"true\"\nname = 1\n": "t.toml:1:8: wait: want true or false, not \"true\"\nt.toml:2:8: name: want a quoted string, not 1",
	} {
		var got toy
		err := Parse("t.toml", []byte(file), &got)
		if err == nil || !strings.Contains(err.Error(), want) || strings.Count(err.Error(), "t.toml:") != strings.Count(want, "t.toml:") {
			t.Errorf("Parse(%q) = %v, want %q", file, err, want)
		}
	}
}

// FuzzParse checks that no file makes Parse panic, and that an error
// always says where.
func FuzzParse(f *testing.F) {
	for _, s := range []string{"name = \"x\"\nevery = \"2m\"\n", "every = 30\n", "[name]\nx = 1\n", "tags = [\"a\", 2]\n", "name.first = 1\n", "wait = { x = 1 }\n"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var got toy
		if err := Parse("t.toml", data, &got); err != nil && !strings.HasPrefix(err.Error(), "t.toml") {
			t.Errorf("Parse(%q) = %v, want an error naming the file", data, err)
		}
	})
}
