// Package layered loads a tool's settings in layers: defaults, then a TOML
// file, then the environment, then flags, each over the one before, then
// Validate once. A table of Fields names each setting's file key,
// environment variable and flag; a mistake in the file is reported at its
// file:line:col.
package layered

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"os"
	"reflect"
	"strings"

	"github.com/pelletier/go-toml/v2"
)

// Field is one setting: its dotted key in the file, its environment
// variable and its flag (none when empty), and Value, which points into
// the settings.
type Field struct {
	Key, Env, Flag, Usage string
	Value                 flag.Value
}

// File is where a tool's settings file is found when --config names none.
type File struct {
	// Env is the variable naming the file.
	Env string
	// Default is read when neither --config nor Env names a file, if it
	// exists; none when empty.
	Default string
}

// Loader binds settings to a command's flags and, once they are parsed,
// layers the file, the environment and the flags over the defaults.
type Loader struct {
	file     File
	config   string
	settings any
	fields   []Field
	given    []flagValue // replayed in order after the file and environment
}

type flagValue struct {
	name string
	set  func() error
}

// NewLoader registers --config and the flag of each field on fs. settings
// is a pointer to the struct the fields' values point into, holding the
// defaults; the file is decoded into it. Flag values are applied again by
// Load, over the file, which is only known once --config is parsed, and
// over the environment.
func NewLoader(fs *flag.FlagSet, settings any, file File, fields []Field) *Loader {
	l := &Loader{file: file, settings: settings, fields: fields}
	where := "$" + file.Env
	if file.Default != "" {
		where += ", else " + file.Default + " when present"
	}
	fs.StringVar(&l.config, "config", "", "read settings from `FILE` (default "+where+")")
	for _, f := range fields {
		if f.Flag == "" {
			continue
		}
		where := f.Key
		if f.Env != "" {
			where += ", $" + f.Env
		}
		fs.Var(&recorder{l: l, name: f.Flag, v: f.Value}, f.Flag, f.Usage+" ["+where+"]")
	}
	return l
}

// recorder applies a flag's value at once, so a bad one is a usage error
// while flags are parsed, and again in Load, over the file and environment.
type recorder struct {
	l    *Loader
	name string
	v    flag.Value
}

func (r *recorder) Set(s string) error {
	if err := r.v.Set(s); err != nil {
		return err
	}
	r.l.given = append(r.l.given, flagValue{r.name, func() error { return r.v.Set(s) }})
	return nil
}

func (r *recorder) String() string {
	if r == nil || r.v == nil {
		return ""
	}
	if r.IsBoolFlag() && r.v.String() == "false" {
		return "" // a --no-X flag not given: nothing to show as its default
	}
	return r.v.String()
}

func (r *recorder) IsBoolFlag() bool {
	if r == nil {
		return false
	}
	b, ok := r.v.(interface{ IsBoolFlag() bool })
	return ok && b.IsBoolFlag()
}

// Given tells whether the flag name was on the command line.
func (l *Loader) Given(name string) bool {
	for _, g := range l.given {
		if g.name == name {
			return true
		}
	}
	return false
}

// Load layers the file (--config, else $File.Env, else File.Default when it
// exists), the environment and the flags over the defaults, then calls
// the settings' Validate method, when they have one.
func (l *Loader) Load(getenv func(string) string) error {
	from := map[string]string{} // key -> the variable or flag that set it last
	var in *checked             // where the file's values are
	path, required := l.config, true
	if path == "" && l.file.Env != "" {
		path = getenv(l.file.Env)
	}
	if path == "" {
		path, required = l.file.Default, false
	}
	if path != "" {
		data, err := os.ReadFile(path)
		switch {
		case err == nil:
			if in, err = parse(path, data, l.settings); err != nil {
				return err
			}
		case !required && errors.Is(err, os.ErrNotExist):
		default:
			return fmt.Errorf("read settings: %w", err)
		}
	}

	for _, f := range l.fields {
		v := getenv(f.Env)
		if f.Env == "" || v == "" {
			continue
		}
		if err := setFromEnv(f, v); err != nil {
			return fmt.Errorf("$%s=%q: %w", f.Env, v, err)
		}
		from[f.Key] = "$" + f.Env
	}

	for _, f := range l.fields {
		if lv, ok := f.Value.(*listValue); ok {
			lv.touched = false
		}
	}
	for _, g := range l.given {
		if err := g.set(); err != nil {
			return err
		}
		for _, f := range l.fields {
			if f.Flag == g.name {
				from[f.Key] = "--" + g.name
			}
		}
	}
	v, ok := l.settings.(interface{ Validate() error })
	if !ok {
		return nil
	}
	err := v.Validate()
	if err == nil {
		return nil
	}
	errs := []error{err}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		errs = j.Unwrap()
	}
	for i, e := range errs {
		var ke *KeyError
		if !errors.As(e, &ke) {
			continue
		}
		if src, ok := from[ke.Key]; ok {
			errs[i] = fmt.Errorf("%s: %w", src, e)
		} else if at, ok := in.position(ke.Key); ok {
			errs[i] = &FileError{Path: path, Line: at.line, Column: at.column, Msg: e.Error(), Err: e}
		}
	}
	return errors.Join(errs...)
}

// setFromEnv sets a field from its variable: a negated boolean's variable
// says the setting itself (EDGE_HEALTH_WAIT=false), lists are
// comma-separated.
func setFromEnv(f Field, v string) error {
	switch val := f.Value.(type) {
	case *negatedBool:
		b, err := parseBool(v)
		if err != nil {
			return err
		}
		*val = negatedBool(b)
		return nil
	case *listValue:
		*val.list = splitList(v)
		return nil
	}
	return f.Value.Set(v)
}

// FileError is a problem in a settings file at a line and column.
type FileError struct {
	Path         string
	Line, Column int
	Msg          string
	// Err is the problem with the value, when Validate found it.
	Err error
}

func (e *FileError) Error() string {
	return fmt.Sprintf("%s:%d:%d: %s", e.Path, e.Line, e.Column, e.Msg)
}

func (e *FileError) Unwrap() error { return e.Err }

// KeyError is a bad value of the setting Key, as a Validate method finds
// it; Load tells where the value came from: the file's line and column,
// the variable or the flag.
type KeyError struct {
	Key string
	Err error
}

// Invalid returns a *KeyError about key.
func Invalid(key, format string, args ...any) error {
	return &KeyError{Key: key, Err: fmt.Errorf(format, args...)}
}

func (e *KeyError) Error() string { return e.Key + ": " + e.Err.Error() }
func (e *KeyError) Unwrap() error { return e.Err }

// Parse decodes a settings file over settings, a pointer to a struct with
// toml tags. Every mistake is a *FileError at its line and column, naming
// the key as written and the form wanted: unknown keys, wrong types, and a
// Duration written as a bare number, which is a number of seconds only
// where the key's name says so (a *_sec or *_secs key).
func Parse(path string, data []byte, settings any) error {
	_, err := parse(path, data, settings)
	return err
}

func parse(path string, data []byte, settings any) (*checked, error) {
	t := reflect.TypeOf(settings)
	if t == nil || t.Kind() != reflect.Pointer || t.Elem().Kind() != reflect.Struct {
		return nil, fmt.Errorf("settings of type %v: want a pointer to a struct", t)
	}
	c, err := check(path, data, t.Elem())
	if err != nil {
		return nil, err
	}
	dec := toml.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	err = dec.Decode(settings)
	var strict *toml.StrictMissingError
	var de *toml.DecodeError
	switch {
	case err == nil:
		setSeconds(settings, c.seconds)
		return c, nil
	case errors.As(err, &strict):
		errs := make([]error, len(strict.Errors))
		for i, e := range strict.Errors {
			line, col := e.Position()
			errs[i] = &FileError{Path: path, Line: line, Column: col, Msg: fmt.Sprintf("unknown key %q", strings.Join(e.Key(), "."))}
		}
		return nil, errors.Join(errs...)
	case errors.As(err, &de):
		// What check lets through, such as a syntax error.
		line, col := de.Position()
		msg := strings.TrimPrefix(de.Error(), "toml: ")
		if k := de.Key(); len(k) > 0 {
			msg = strings.Join(k, ".") + ": " + msg
		}
		return nil, &FileError{Path: path, Line: line, Column: col, Msg: msg}
	default:
		return nil, fmt.Errorf("%s: %w", path, err)
	}
}
