// Package twin turns the module twin's desired properties into the relay's
// typed, validated configuration and reconciles it exactly once per
// version (docs/edge-protocol.md#twin-reconciliation): a full GET on every connect, patches
// applied in order, a re-GET on a gap, JSON-merge semantics, the last good
// configuration kept on disk and reported back.
package twin

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"path/filepath"
	"slices"
	"strconv"
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
	Upstream Upstream `json:"upstream"`
	Sources  Sources  `json:"sources"`
}

// Upstream is how the backlog drains after an outage, besides the
// priorities of sources and topics.
type Upstream struct {
	// MaxBytesPerSecond caps what all workers together send upstream, as
	// edgehub.Session.Size counts each publish (the PUBLISH's topic,
	// packet ID and body, or edgeHub's routing size when larger). Zero
	// is no cap. A change applies at once.
	MaxBytesPerSecond int64 `json:"maxBytesPerSecond"`
	// TimeToLiveSecs is, per priority ("0" to "9", and "default" for
	// sources and topics with none), how old a message may be when it
	// would be sent; an older one is dropped and counted (reason "ttl").
	// Zero or missing inherits queue.maxAge, as edgeHub's route
	// timeToLiveSecs inherits storeAndForwardConfiguration.
	TimeToLiveSecs map[string]int64 `json:"timeToLiveSecs,omitempty"`
}

// MinBytesPerSecond is the lowest cap accepted: below it one message at
// edgeHub's size limit would take minutes.
const MinBytesPerSecond = 1024

// Ranks order the drain: a message of higher rank drains first. Rank 0
// is that of a source and topic without priority (edgeHub gives a route
// without one 2,000,000,000, after 0–9); priority p (0 highest to 9) is
// rank Ranks-1-p, so priority 0 is rank 10.
const Ranks = 11

// RankOf is the rank of a priority (nil for none).
func RankOf(priority *int) uint8 {
	if priority == nil {
		return 0
	}
	return uint8(Ranks - 1 - *priority)
}

// PriorityName is how the twin names a rank's priority: "0" to "9", or
// "default" for rank 0.
func PriorityName(rank uint8) string {
	if rank == 0 {
		return "default"
	}
	return strconv.Itoa(Ranks - 1 - int(rank))
}

// TTL is how old a message of rank may be when sent; zero for no limit
// beyond queue.maxAge.
func (u Upstream) TTL(rank uint8) time.Duration {
	return time.Duration(u.TimeToLiveSecs[PriorityName(rank)]) * time.Second
}

// Batching packs small readings into one JSON array message, the lever
// on IoT Hub's cost: it bills in 4 KB units (docs/edge-protocol.md#metering).
type Batching struct {
	Enabled bool `json:"enabled"`
	// MaxBytes bounds a batch as IoT Hub meters it; batches are cut at
	// multiples of 4096 below it.
	MaxBytes    int      `json:"maxBytes"`
	MaxMessages int      `json:"maxMessages"`
	Linger      Duration `json:"linger"`
	// Compression is "none" or "gzip" (a batch's body gzipped, $.ce=gzip).
	Compression string `json:"compression"`
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
	Name string `json:"-"`   // its key in "sources"
	URL  string `json:"url"` // tcp://, ssl://, mqtt://, mqtts://
	// Priority orders the drain after an outage, as edgeHub's route
	// priority: 0 (highest) to 9; none drains last. A topic's own
	// priority overrides it.
	Priority *int   `json:"priority,omitempty"`
	Username string `json:"username,omitempty"`
	// PasswordEnv names the relay's environment variable that holds the
	// password, never the password itself: twins are readable in IoT
	// Hub. Only a name PasswordEnvAllowed accepts, and only for a broker
	// reached over TLS.
	PasswordEnv string `json:"passwordEnv,omitempty"`
	// CAFile is an absolute path to CA certificates for a TLS broker.
	CAFile string `json:"caFile,omitempty"`
	Topics Topics `json:"topics"`
}

// Topic maps a topic filter to an output and properties. A message takes
// the first topic, by name, whose filter matches.
type Topic struct {
	Name       string            `json:"-"` // its key in "topics"
	Filter     string            `json:"filter"`
	QoS        byte              `json:"qos"`
	Output     string            `json:"output,omitempty"` // default: Config.Output
	Properties map[string]string `json:"properties,omitempty"`
	// Priority overrides the source's (Source.Priority).
	Priority *int `json:"priority,omitempty"`
}

// Rank is the drain rank of s's messages on topic t: t's priority, else
// s's (see Ranks).
func (s Source) Rank(t Topic) uint8 {
	if t.Priority != nil {
		return RankOf(t.Priority)
	}
	return RankOf(s.Priority)
}

// Defaults is the configuration before any desired properties.
func Defaults() Config {
	return Config{
		Output:         "telemetry",
		LogLevel:       "info",
		ReportInterval: Duration(time.Minute),
		InFlight:       32,
		Batching:       Batching{MaxBytes: 65536, MaxMessages: 100, Linger: Duration(time.Second), Compression: "none"},
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
	known := map[string]bool{"output": true, "logLevel": true, "reportInterval": true, "inFlight": true, "batching": true, "queue": true, "upstream": true, "sources": true}
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
	if c.Batching.Compression != "none" && c.Batching.Compression != "gzip" {
		bad("batching.compression %q: want none or gzip", c.Batching.Compression)
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
	if n := c.Upstream.MaxBytesPerSecond; n != 0 && n < MinBytesPerSecond {
		bad("upstream.maxBytesPerSecond %d: want 0 (no cap) or at least %d", n, MinBytesPerSecond)
	}
	for _, k := range slices.Sorted(maps.Keys(c.Upstream.TimeToLiveSecs)) {
		if k != "default" && (len(k) != 1 || k[0] < '0' || k[0] > '9') {
			bad("upstream.timeToLiveSecs.%s: want a priority 0 to 9 or default", k)
		}
		if c.Upstream.TimeToLiveSecs[k] < 0 {
			bad("upstream.timeToLiveSecs.%s: want seconds, 0 to inherit queue.maxAge", k)
		}
	}
	badPriority := func(p *int) bool { return p != nil && (*p < 0 || *p > 9) }
	names := map[string]bool{}
	for _, s := range c.Sources {
		if badPriority(s.Priority) {
			bad("sources.%s.priority %d: want 0 (highest) to 9", s.Name, *s.Priority)
		}
		if !validName(s.Name) || names[s.Name] {
			bad("sources.%s: want a unique name of letters, digits, '-' or '_'", s.Name)
		}
		names[s.Name] = true
		if !strings.Contains(s.URL, "://") {
			bad("sources.%s.url %q: want tcp://, ssl://, mqtt:// or mqtts://HOST:PORT", s.Name, s.URL)
		}
		if s.PasswordEnv != "" {
			if err := PasswordEnvAllowed(s.PasswordEnv); err != nil {
				bad("sources.%s.passwordEnv: %w", s.Name, err)
			}
			if scheme := scheme(s.URL); scheme != "ssl" && scheme != "mqtts" {
				bad("sources.%s.passwordEnv: a password is never sent over plain %s://; use ssl:// or mqtts://", s.Name, scheme)
			}
		}
		if s.CAFile != "" && !filepath.IsAbs(s.CAFile) {
			bad("sources.%s.caFile %q: want an absolute path", s.Name, s.CAFile)
		}
		if len(s.Topics) == 0 {
			bad("sources.%s.topics: want at least one", s.Name)
		}
		for _, t := range s.Topics {
			if !validName(t.Name) {
				bad("sources.%s.topics.%s: want a name of letters, digits, '-' or '_'", s.Name, t.Name)
			}
			if t.Filter == "" || t.QoS > 1 {
				bad("sources.%s.topics.%s: want a filter and qos 0 or 1", s.Name, t.Name)
			}
			if badPriority(t.Priority) {
				bad("sources.%s.topics.%s.priority %d: want 0 (highest) to 9", s.Name, t.Name, *t.Priority)
			}
			if t.Output != "" && !validName(t.Output) {
				bad("sources.%s.topics.%s.output %q: bad name", s.Name, t.Name, t.Output)
			}
		}
	}
	return errors.Join(errs...)
}

// PasswordEnvAllowed checks the name of a variable that a source's
// passwordEnv may read: capitals, digits and '_', ending in "_PASSWORD"
// (PRESS_PASSWORD), and outside the namespaces of IoT Edge (IOTEDGE_),
// of the relay's own settings (EDGE_RELAY_) and of the provisioner's TPM
// passwords (EDGE_TPM_). Whoever writes the twin chooses the name and
// the broker the value goes to, so it must never name the relay's
// identity (EdgeHubConnectionString, IotHubConnectionString), a proxy's
// credentials or any other variable not put there for a source.
func PasswordEnvAllowed(name string) error {
	const suffix = "_PASSWORD"
	for _, r := range name {
		if !(r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_') {
			return fmt.Errorf("%q: want a name of capitals, digits and '_' ending in %s", name, suffix)
		}
	}
	if len(name) <= len(suffix) || !strings.HasSuffix(name, suffix) || name[0] == '_' {
		return fmt.Errorf("%q: want a name ending in %s, such as PRESS%s", name, suffix, suffix)
	}
	for _, reserved := range []string{"IOTEDGE_", "EDGE_RELAY_", "EDGE_TPM_"} {
		if strings.HasPrefix(name, reserved) {
			return fmt.Errorf("%q: %s* variables are not source passwords", name, reserved)
		}
	}
	return nil
}

// scheme is a URL's scheme in lower case ("" when it has none), as
// url.Parse reads it.
func scheme(raw string) string {
	s, _, ok := strings.Cut(raw, "://")
	if !ok {
		return ""
	}
	return strings.ToLower(s)
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

// Sources are an object keyed by source name in the twin, which holds no
// arrays (docs/edge-protocol.md#deployments, "no arrays"); here, a list sorted by name.
type Sources []Source

// Topics are an object keyed by a name of the user's choosing, for the
// same reason; here, a list sorted by name.
type Topics []Topic

func (s Sources) MarshalJSON() ([]byte, error) {
	return marshalNamed(s, func(x Source) string { return x.Name })
}

func (s *Sources) UnmarshalJSON(b []byte) error {
	return unmarshalNamed(b, (*[]Source)(s), func(x *Source, name string) { x.Name = name })
}

func (t Topics) MarshalJSON() ([]byte, error) {
	return marshalNamed(t, func(x Topic) string { return x.Name })
}

func (t *Topics) UnmarshalJSON(b []byte) error {
	return unmarshalNamed(b, (*[]Topic)(t), func(x *Topic, name string) { x.Name = name })
}

func marshalNamed[T any](list []T, name func(T) string) ([]byte, error) {
	m := make(map[string]T, len(list))
	for _, x := range list {
		m[name(x)] = x
	}
	return json.Marshal(m)
}

// unmarshalNamed reads an object of named entries, strictly (an unknown
// field is an error, as in the rest of the document), into a list sorted
// by name. A null entry is no entry: JSON merge patches delete with null.
func unmarshalNamed[T any](b []byte, list *[]T, setName func(*T, string)) error {
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(b, &raw); err != nil {
		return fmt.Errorf("want an object keyed by name: %w", err)
	}
	out := make([]T, 0, len(raw))
	for _, name := range slices.Sorted(maps.Keys(raw)) {
		if string(raw[name]) == "null" {
			continue
		}
		var x T
		dec := json.NewDecoder(bytes.NewReader(raw[name]))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&x); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		setName(&x, name)
		out = append(out, x)
	}
	*list = out
	return nil
}
