package layered

import (
	"errors"
	"fmt"
	"math"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/pelletier/go-toml/v2/unstable"
)

// A settings file is checked against the settings struct before go-toml
// decodes it, so that each mistake is told by its key as written, with the
// form wanted: go-toml's own messages name Go fields and types, and it
// takes a bare number for a Duration as nanoseconds.

var durationType = reflect.TypeFor[Duration]()

// saysSeconds reports whether a key's name says its number is seconds, as
// aziot's *_sec keys do.
func saysSeconds(key string) bool {
	for _, s := range []string{"_sec", "_secs", "_seconds"} {
		if strings.HasSuffix(key, s) {
			return true
		}
	}
	return false
}

// position is where a key's value is in a file.
type position struct{ line, column int }

// checked is what check learnt of a file: where each key's value is, and
// the durations written as seconds, to be set once go-toml has decoded.
type checked struct {
	at      map[string]position
	seconds map[string]time.Duration
}

// position returns where the file set key, if it did.
func (c *checked) position(key string) (position, bool) {
	if c == nil {
		return position{}, false
	}
	at, ok := c.at[key]
	return at, ok
}

// check walks data, a settings file, against t, the settings struct type.
// A file that does not parse is left to go-toml, whose errors say where
// and why.
func check(path string, data []byte, t reflect.Type) (*checked, error) {
	c := &checked{at: map[string]position{}, seconds: map[string]time.Duration{}}
	var (
		p       unstable.Parser
		section []string
		errs    []error
	)
	fail := func(r unstable.Range, format string, args ...any) {
		s := p.Shape(r)
		errs = append(errs, &FileError{Path: path, Line: s.Start.Line, Column: s.Start.Column, Msg: fmt.Sprintf(format, args...)})
	}
	// value checks the value n of key, at the Go type want.
	var value func(key []string, keyRange, valRange unstable.Range, n *unstable.Node, want reflect.Type)
	// keyed resolves kv's key below the table of type in, at prefix, then
	// checks its value.
	keyed := func(in reflect.Type, prefix []string, kv *unstable.Node) {
		key, r := slices.Clone(prefix), unstable.Range{}
		t, end := in, 0
		for it := kv.Key(); it.Next(); {
			k := it.Node()
			if len(key) == len(prefix) {
				r = k.Raw
			}
			end = int(k.Raw.Offset + k.Raw.Length)
			if t != nil && t.Kind() != reflect.Struct {
				t = nil // a key below a value: reported by value
			}
			key = append(key, string(k.Data))
			if t == nil {
				continue
			}
			parent := t
			if t = fieldType(t, string(k.Data)); t == nil {
				fail(r, "unknown key %q%s", strings.Join(key, "."), takes(parent, key[:len(key)-1]))
				return
			}
		}
		value(key, r, valueStart(data, end), kv.Value(), t)
	}
	value = func(key []string, keyRange, valRange unstable.Range, n *unstable.Node, want reflect.Type) {
		name := strings.Join(key, ".")
		r := n.Raw
		if r.Length == 0 {
			r = valRange // arrays and inline tables have no range of their own
		}
		s := p.Shape(r)
		c.at[name] = position{s.Start.Line, s.Start.Column}
		if want == nil {
			fail(keyRange, "%s: below %s, which is not a table", name, strings.Join(key[:len(key)-1], "."))
			return
		}
		if want.Kind() == reflect.Struct {
			if n.Kind != unstable.InlineTable {
				fail(r, "%s: want a table [%s]%s", name, name, not(&p, n))
				return
			}
			for it := n.Children(); it.Next(); {
				keyed(want, key, it.Node())
			}
			return
		}
		if msg, d := scalar(key[len(key)-1], n, want); msg != "" {
			fail(r, "%s: want %s%s", name, msg, not(&p, n))
		} else if d != nil {
			c.seconds[name] = *d
		}
	}

	p.Reset(data)
	for p.NextExpression() {
		n := p.Expression()
		switch n.Kind {
		case unstable.Table, unstable.ArrayTable:
			section = nil
			var r unstable.Range
			t := t
			for it := n.Key(); it.Next(); {
				k := it.Node()
				if section == nil {
					r = k.Raw
				}
				section = append(section, string(k.Data))
				switch next := fieldType(t, string(k.Data)); {
				case t == nil:
				case next == nil:
					fail(r, "unknown table [%s]%s", strings.Join(section, "."), takes(t, section[:len(section)-1]))
					t = nil
				case next.Kind() != reflect.Struct:
					fail(r, "[%s]: %s is a value (%s = …), not a table", strings.Join(section, "."), strings.Join(section, "."), k.Data)
					t = nil
				default:
					t = next
				}
			}
			if n.Kind == unstable.ArrayTable && t != nil {
				fail(r, "[[%s]]: want a single table [%s]", strings.Join(section, "."), strings.Join(section, "."))
			}
		case unstable.KeyValue:
			in := t
			for _, k := range section {
				if in = fieldType(in, k); in == nil {
					break
				}
			}
			if len(section) > 0 && (in == nil || in.Kind() != reflect.Struct) {
				continue // reported at the table's header
			}
			keyed(in, section, n)
		}
	}
	if p.Error() != nil {
		return c, nil
	}
	return c, errors.Join(errs...)
}

// scalar checks n against the Go type want; it returns the form wanted
// when n does not fit, and the duration when n is a number of seconds.
func scalar(key string, n *unstable.Node, want reflect.Type) (string, *time.Duration) {
	switch {
	case want == durationType:
		if n.Kind == unstable.String {
			if _, err := time.ParseDuration(string(n.Data)); err == nil {
				return "", nil
			}
		}
		if !saysSeconds(key) {
			return `a duration such as "300s"`, nil
		}
		const form = `a duration such as "300s" or a whole number of seconds`
		secs, err := parseInt(n.Data)
		if n.Kind != unstable.Integer || err != nil || secs < 0 || secs > math.MaxInt64/int64(time.Second) {
			return form, nil
		}
		d := time.Duration(secs) * time.Second
		return "", &d
	case want.Kind() == reflect.String:
		if n.Kind != unstable.String {
			return "a quoted string", nil
		}
	case want.Kind() == reflect.Bool:
		if n.Kind != unstable.Bool {
			return "true or false", nil
		}
	case want.Kind() >= reflect.Int && want.Kind() <= reflect.Int64:
		v, err := parseInt(n.Data)
		if n.Kind != unstable.Integer || err != nil || reflect.Zero(want).OverflowInt(v) {
			lo, hi := int64(-1)<<(want.Bits()-1), int64(1)<<(want.Bits()-1)-1
			return fmt.Sprintf("a whole number from %d to %d", lo, hi), nil
		}
	case want.Kind() >= reflect.Uint && want.Kind() <= reflect.Uint64:
		v, err := parseInt(n.Data)
		if n.Kind != unstable.Integer || err != nil || v < 0 || reflect.Zero(want).OverflowUint(uint64(v)) {
			return fmt.Sprintf("a whole number from 0 to %#x", uint64(1)<<want.Bits()-1), nil
		}
	case want.Kind() == reflect.Slice && want.Elem().Kind() == reflect.String:
		const form = `a list of strings such as ["a", "b"]`
		if n.Kind != unstable.Array {
			return form, nil
		}
		for it := n.Children(); it.Next(); {
			if k := it.Node().Kind; k != unstable.String && k != unstable.Comment {
				return form, nil
			}
		}
	}
	return "", nil
}

// valueStart is the range of the first byte of a value whose key ends at
// end: past blanks, "=" and blanks.
func valueStart(data []byte, end int) unstable.Range {
	i := end
	for i < len(data) && (data[i] == ' ' || data[i] == '\t' || data[i] == '=') {
		i++
	}
	return unstable.Range{Offset: uint32(min(i, len(data))), Length: 1}
}

// parseInt reads a TOML integer: decimal, 0x, 0o or 0b, with underscores.
func parseInt(b []byte) (int64, error) {
	s := strings.ReplaceAll(string(b), "_", "")
	return strconv.ParseInt(s, 0, 64)
}

// not is ", not VALUE" as written in the file, when it is short.
func not(p *unstable.Parser, n *unstable.Node) string {
	if n.Raw.Length == 0 || n.Raw.Length > 40 {
		return ""
	}
	return ", not " + string(p.Raw(n.Raw))
}

// fieldType is the type of the field of struct t whose TOML key is key,
// or nil.
func fieldType(t reflect.Type, key string) reflect.Type {
	if t == nil || t.Kind() != reflect.Struct {
		return nil
	}
	for i := range t.NumField() {
		if name, ok := tomlName(t.Field(i)); ok && name == key {
			return t.Field(i).Type
		}
	}
	return nil
}

func tomlName(f reflect.StructField) (string, bool) {
	if !f.IsExported() {
		return "", false
	}
	name, _, _ := strings.Cut(f.Tag.Get("toml"), ",")
	switch name {
	case "-":
		return "", false
	case "":
		return f.Name, true
	}
	return name, true
}

// takes says which keys a table takes, for an unknown key in it.
func takes(t reflect.Type, table []string) string {
	if t == nil || t.Kind() != reflect.Struct {
		return ""
	}
	var keys []string
	for i := range t.NumField() {
		if name, ok := tomlName(t.Field(i)); ok {
			keys = append(keys, name)
		}
	}
	where := "the file"
	if len(table) > 0 {
		where = "[" + strings.Join(table, ".") + "]"
	}
	return fmt.Sprintf("; %s takes %s", where, strings.Join(keys, ", "))
}

// setSeconds sets the durations check found written as seconds, which
// go-toml decoded as nanoseconds.
func setSeconds(settings any, seconds map[string]time.Duration) {
	for key, d := range seconds {
		v := reflect.ValueOf(settings).Elem()
		for k := range strings.SplitSeq(key, ".") {
			for i := range v.NumField() {
				if name, ok := tomlName(v.Type().Field(i)); ok && name == k {
					v = v.Field(i)
					break
				}
			}
		}
		v.Set(reflect.ValueOf(Duration(d)))
	}
}
