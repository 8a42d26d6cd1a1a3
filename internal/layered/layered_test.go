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
