// Package twin turns the module twin's desired properties into the relay's
// typed, validated configuration and reconciles it exactly once per
// version (edge-runtime.md §5): a full GET on every connect, patches
// applied in order, a re-GET on a gap, JSON-merge semantics, the last good
// configuration kept on disk and reported back.
package twin

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Config is the relay's configuration: the desired properties' known
// keys. Unknown top-level keys are ignored (layered deployments add their
// own); unknown keys inside a known object are errors, to catch typos.
type Config struct {
	// Output is where relayed telemetry goes: FROM /messages/modules/<m>/outputs/<output>.
	Output   string `json:"output"`
	LogLevel string `json:"logLevel"` // debug, info, warn, error
	// ReportInterval is how often a summary goes to reported properties.
	ReportInterval Duration `json:"reportInterval"`
	// InFlight is how many publishes of one publishing worker may await
	// their PUBACK at once (sources are spread over four workers).
	InFlight int      `json:"inFlight"`
	Batching Batching `json:"batching"`
	Queue    Queue    `json:"queue"`
	Sources  []Source `json:"sources"`
}

// Batching packs small readings into one JSON array message.
type Batching struct {
	Enabled     bool     `json:"enabled"`
	MaxBytes    int      `json:"maxBytes"`
	MaxMessages int      `json:"maxMessages"`
	Linger      Duration `json:"linger"`
}

// Queue bounds the store-and-forward queue.
type Queue struct {
	MaxBytes int64    `json:"maxBytes"`
	MaxAge   Duration `json:"maxAge"`
	// WhenFull is "backpressure" (stop acknowledging producers) or
	// "dropOldest".
	WhenFull string `json:"whenFull"`
}

// Source is a local MQTT broker to relay from.
type Source struct {
	Name        string  `json:"name"`
	URL         string  `json:"url"` // tcp://, ssl://, mqtt://, mqtts://
	Username    string  `json:"username,omitempty"`
	PasswordEnv string  `json:"passwordEnv,omitempty"` // the password is in this environment variable, never in the twin
	CAFile      string  `json:"caFile,omitempty"`
	Topics      []Topic `json:"topics"`
}

// Topic maps a topic filter to an output and properties.
type Topic struct {
	Filter     string            `json:"filter"`
	QoS        byte              `json:"qos"`
	Output     string            `json:"output,omitempty"` // default: Config.Output
	Properties map[string]string `json:"properties,omitempty"`
}

// Defaults is the configuration before any desired properties.
func Defaults() Config {
	return Config{
		Output:         "telemetry",
		LogLevel:       "info",
		ReportInterval: Duration(time.Minute),
		InFlight:       32,
		Batching:       Batching{MaxBytes: 4096, MaxMessages: 100, Linger: Duration(time.Second)},
		Queue:          Queue{MaxBytes: 1 << 30, MaxAge: Duration(7 * 24 * time.Hour), WhenFull: "backpressure"},
	}
}

// Parse reads desired properties ("$"-prefixed keys and unknown top-level
// keys ignored) over the defaults and validates the result.
func Parse(desired []byte) (Config, error) {
	var top map[string]json.RawMessage
	if err := json.Unmarshal(desired, &top); err != nil {
		return Config{}, fmt.Errorf("desired properties: %w", err)
	}
	known := map[string]bool{"output": true, "logLevel": true, "reportInterval": true, "inFlight": true, "batching": true, "queue": true, "sources": true}
	for k := range top {
		if !known[k] {
			delete(top, k)
		}
	}
	b, err := json.Marshal(top)
	if err != nil {
		return Config{}, err
	}
	c := Defaults()
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil {
		return Config{}, fmt.Errorf("desired properties: %w", err)
	}
	return c, c.Validate()
}

// Validate checks every rule and names each broken one.
func (c *Config) Validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if !validName(c.Output) {
		bad("output %q: want letters, digits, '-' or '_'", c.Output)
	}
	switch c.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		bad("logLevel %q: want debug, info, warn or error", c.LogLevel)
	}
	if c.ReportInterval < Duration(time.Second) {
		bad("reportInterval %v: want at least 1s", c.ReportInterval)
	}
	if c.InFlight < 1 || c.InFlight > 1000 {
		bad("inFlight %d: want 1 to 1000", c.InFlight)
	}
	if c.Batching.MaxBytes <= 0 || c.Batching.MaxBytes > 256*1024 {
		bad("batching.maxBytes %d: want 1 to 262144", c.Batching.MaxBytes)
	}
	if c.Batching.MaxMessages <= 0 {
		bad("batching.maxMessages %d: want at least 1", c.Batching.MaxMessages)
	}
	if c.Batching.Linger < 0 {
		bad("batching.linger: negative")
	}
	if c.Queue.MaxBytes < 1<<20 {
		bad("queue.maxBytes %d: want at least 1 MiB", c.Queue.MaxBytes)
	}
	if c.Queue.MaxAge <= 0 {
		bad("queue.maxAge: want a positive duration")
	}
	if c.Queue.WhenFull != "backpressure" && c.Queue.WhenFull != "dropOldest" {
		bad("queue.whenFull %q: want backpressure or dropOldest", c.Queue.WhenFull)
	}
	names := map[string]bool{}
	for i, s := range c.Sources {
		if !validName(s.Name) || names[s.Name] {
			bad("sources[%d].name %q: want a unique name", i, s.Name)
		}
		names[s.Name] = true
		if !strings.Contains(s.URL, "://") {
			bad("sources[%d].url %q: want tcp://, ssl://, mqtt:// or mqtts://HOST:PORT", i, s.URL)
		}
		if len(s.Topics) == 0 {
			bad("sources[%d].topics: want at least one", i)
		}
		for j, t := range s.Topics {
			if t.Filter == "" || t.QoS > 1 {
				bad("sources[%d].topics[%d]: want a filter and qos 0 or 1", i, j)
			}
			if t.Output != "" && !validName(t.Output) {
				bad("sources[%d].topics[%d].output %q: bad name", i, j, t.Output)
			}
		}
	}
	return errors.Join(errs...)
}

func validName(s string) bool {
	if s == "" || len(s) > 128 {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
			return false
		}
	}
	return true
}

// Duration is a time.Duration written as "30s" in JSON.
type Duration time.Duration

// UnmarshalJSON reads "30s" (or a number of seconds).
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		var secs float64
		if err := json.Unmarshal(b, &secs); err != nil {
			return fmt.Errorf("want a duration such as \"30s\"")
		}
		*d = Duration(secs * float64(time.Second))
		return nil
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("want a duration such as \"30s\": %w", err)
	}
	*d = Duration(v)
	return nil
}

// MarshalJSON writes "30s".
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

func (d Duration) String() string { return time.Duration(d).String() }
