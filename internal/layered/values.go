package layered

import (
	"errors"
	"flag"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// StringVar is the Field value of a string setting.
func StringVar(p *string) flag.Value { return (*stringValue)(p) }

type stringValue string

func (v *stringValue) Set(s string) error { *v = stringValue(s); return nil }
func (v *stringValue) String() string     { return string(*v) }

// DurationVar is the Field value of a Duration setting.
func DurationVar(p *Duration) flag.Value { return (*durationValue)(p) }

type durationValue Duration

func (v *durationValue) Set(s string) error {
	d, err := time.ParseDuration(s)
	if err != nil {
		return errors.New("want a duration such as 300s or 5m")
	}
	*v = durationValue(d)
	return nil
}
func (v *durationValue) String() string { return time.Duration(*v).String() }

// NegatedBoolVar is the Field value of a setting X that defaults to true,
// offered as the flag --no-X; its file key and variable say X itself.
func NegatedBoolVar(p *bool) flag.Value { return (*negatedBool)(p) }

type negatedBool bool

func (v *negatedBool) Set(s string) error {
	b, err := parseBool(s)
	if err != nil {
		return err
	}
	*v = negatedBool(!b)
	return nil
}
func (v *negatedBool) String() string   { return strconv.FormatBool(!bool(*v)) }
func (v *negatedBool) IsBoolFlag() bool { return true }

func parseBool(s string) (bool, error) {
	b, err := strconv.ParseBool(s)
	if err != nil {
		return false, errors.New("want true or false")
	}
	return b, nil
}

// ListVar is the Field value of a list whose flag is repeated: the first
// use replaces what the file or environment gave, the next ones append.
// Its variable is comma-separated.
func ListVar(p *[]string) flag.Value { return &listValue{list: p} }

// CommaListVar is the Field value of a list whose flag, like its
// variable, is comma-separated.
func CommaListVar(p *[]string) flag.Value { return &listValue{list: p, comma: true} }

type listValue struct {
	list    *[]string
	comma   bool
	touched bool
}

func (v *listValue) Set(s string) error {
	if v.comma {
		*v.list = splitList(s)
		return nil
	}
	if !v.touched {
		*v.list = nil
		v.touched = true
	}
	*v.list = append(*v.list, s)
	return nil
}

func (v *listValue) String() string {
	if v.list == nil {
		return ""
	}
	return strings.Join(*v.list, ",")
}

func splitList(s string) []string {
	var out []string
	for p := range strings.SplitSeq(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// Duration is a time.Duration written as "90s" or "5m" in TOML.
type Duration time.Duration

// UnmarshalText parses a Go duration.
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return fmt.Errorf(`want a duration such as "300s": %w`, err)
	}
	*d = Duration(v)
	return nil
}

// MarshalText writes the duration as Go does.
func (d Duration) MarshalText() ([]byte, error) { return []byte(time.Duration(d).String()), nil }

func (d Duration) String() string { return time.Duration(d).String() }

// IndexVar is a persistent handle's index, 0 to 0x7fffff, in any base
// strconv reads (aziot's auth_key_index is added to 0x81000000).
func IndexVar(p *uint32) flag.Value { return (*indexValue)(p) }

type indexValue uint32

func (v *indexValue) Set(s string) error {
	n, err := strconv.ParseUint(s, 0, 32)
	if err != nil || n > 0x7FFFFF {
		return fmt.Errorf("want a number from 0 to 0x7fffff")
	}
	*v = indexValue(n)
	return nil
}

func (v *indexValue) String() string { return fmt.Sprintf("%#x", uint32(*v)) }
