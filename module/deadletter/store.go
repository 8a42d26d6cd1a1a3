// Package deadletter keeps the messages the relay can never deliver: too
// large for IoT Hub, too large for the queue, or refused by the relay's
// own rules. Such a message is acknowledged to its producer only once it
// is durably in the [Store], where an operator lists, fetches and purges
// it (the edge-relay direct methods deadLetters.list, .get, .purge).
//
// The store is a folder of files, one per letter, each written with a
// temporary file, fsync and rename (mode 0600). It is bounded by count and
// bytes; when full, [Store.Put] refuses with [ErrFull] and the producer
// stays unacknowledged (backpressure) until an operator purges. A body
// larger than [Options.MaxBody] is kept cut to that size, with its full
// size and SHA-256: the one documented loss, flagged on the letter and
// counted. A Store is safe for concurrent use.
package deadletter

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/edgetpm/edgetpm/internal/atomicfile"
	"github.com/edgetpm/edgetpm/module/queue"
)

// Reasons a message is dead-lettered, the keys of Stats.ByReason.
const (
	// ReasonTooLarge is a message over IoT Hub's 256 KiB, properties
	// included: edgeHub would drop it.
	ReasonTooLarge = "too_large"
	// ReasonQueueLimit is a message larger than the queue can hold (its
	// maxBytes or its record bound).
	ReasonQueueLimit = "queue_limit"
	// ReasonUnrouted is a local broker's message that no configured topic
	// filter matches (a subscription left in the broker's session).
	ReasonUnrouted = "unrouted"
)

// Defaults of Options.
const (
	DefaultMaxBytes = 64 << 20
	DefaultMaxCount = 10000
	DefaultMaxBody  = 1 << 20
)

// ErrFull is Put refusing a letter because the store is at its bound.
var ErrFull = errors.New("dead-letter store full")

// ErrNotFound is Get for an ID the store does not hold.
var ErrNotFound = errors.New("no such dead letter")

// Letter is a message that could not be delivered, and why.
type Letter struct {
	// ID is the store's, assigned by Put: 16 hex digits, increasing.
	ID string `json:"id"`
	// Reason is one of the Reason constants; Detail the error in words.
	Reason string `json:"reason"`
	Detail string `json:"detail,omitempty"`
	// Source is where it came from ("mqtt:<source>", "edgehub:<input>"),
	// Topic the MQTT topic when it came from a local broker.
	Source string    `json:"source"`
	Topic  string    `json:"topic,omitempty"`
	Time   time.Time `json:"time"`
	// MessageID is its $.mid; Put keeps one letter per source and ID.
	MessageID       string            `json:"messageId,omitempty"`
	Output          string            `json:"output,omitempty"`
	ContentType     string            `json:"contentType,omitempty"`
	ContentEncoding string            `json:"contentEncoding,omitempty"`
	Properties      map[string]string `json:"properties,omitempty"`
	// Size is the body's length as received and SHA256 its digest; Body
	// holds at most Options.MaxBody of it (Truncated when cut).
	Size      int    `json:"size"`
	SHA256    string `json:"sha256"`
	Truncated bool   `json:"truncated,omitempty"`
	Body      []byte `json:"-"`
}

// Options bound a Store; zero values take the defaults.
type Options struct {
	// MaxBytes bounds the files' total size, MaxCount their number.
	MaxBytes int64
	MaxCount int
	// MaxBody is the most of a body kept.
	MaxBody int
	Now     func() time.Time
}

// Stats are the store's contents and counts since Open.
type Stats struct {
	Count int   `json:"count"`
	Bytes int64 `json:"bytes"`
	// Stored counts the letters held now by reason; Added those put since
	// Open, Truncated how many of those were cut, Refused the Puts
	// refused as full.
	Stored    map[string]int   `json:"stored"`
	Added     map[string]int64 `json:"added"`
	Truncated int64            `json:"truncated"`
	Refused   int64            `json:"refused"`
}

// entry is what the store keeps in memory of a letter.
type entry struct {
	reason, source, mid string
	size                int64 // of the file
}

// Store is the dead-letter folder. Create it with Open.
type Store struct {
	dir  string
	opts Options

	mu      sync.Mutex
	next    uint64
	entries map[uint64]entry
	byMID   map[string]uint64 // source + "\x00" + mid
	bytes   int64
	stats   Stats
}

const suffix = ".letter"

// Open opens (creating 0700) the store in dir and indexes what it holds.
func Open(dir string, opts Options) (*Store, error) {
	if opts.MaxBytes <= 0 {
		opts.MaxBytes = DefaultMaxBytes
	}
	if opts.MaxCount <= 0 {
		opts.MaxCount = DefaultMaxCount
	}
	if opts.MaxBody <= 0 {
		opts.MaxBody = DefaultMaxBody
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if err := mkdirDurable(dir); err != nil {
		return nil, fmt.Errorf("open dead letters %s: %w", dir, err)
	}
	s := &Store{dir: dir, opts: opts, entries: map[uint64]entry{}, byMID: map[string]uint64{},
		stats: Stats{Added: map[string]int64{}}}
	names, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("open dead letters %s: %w", dir, err)
	}
	for _, de := range names {
		name := de.Name()
		if strings.HasPrefix(name, ".") { // a temporary file a crash left
			os.Remove(filepath.Join(dir, name))
			continue
		}
		id, ok := parseName(name)
		if !ok {
			continue
		}
		info, err := de.Info()
		if err != nil {
			return nil, fmt.Errorf("open dead letters %s: %w", dir, err)
		}
		e := entry{reason: "damaged", size: info.Size()}
		if l, err := readHeader(filepath.Join(dir, name)); err == nil {
			e.reason, e.source, e.mid = l.Reason, l.Source, l.MessageID
		}
		s.index(id, e)
		s.next = max(s.next, id+1)
	}
	return s, nil
}

// mkdirDurable creates dir and makes its name durable in its parent.
func mkdirDurable(dir string) error {
	if _, err := os.Stat(dir); err == nil {
		return nil
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	d, err := os.Open(filepath.Dir(dir))
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

func (s *Store) index(id uint64, e entry) {
	s.entries[id] = e
	s.bytes += e.size
	if e.mid != "" {
		s.byMID[e.source+"\x00"+e.mid] = id
	}
}

func name(id uint64) string { return fmt.Sprintf("%016x", id) + suffix }

func parseName(n string) (uint64, bool) {
	h, ok := strings.CutSuffix(n, suffix)
	if !ok || len(h) != 16 {
		return 0, false
	}
	id, err := strconv.ParseUint(h, 16, 64)
	return id, err == nil
}

// Put writes l durably (setting its ID, Time when zero, Size, SHA256) and
// returns once it is on disk; only then may its producer be acknowledged.
// A letter with the source and MessageID of one held already is not
// written again (a redelivery). A full store refuses with ErrFull.
func (s *Store) Put(l *Letter) error {
	if l.Time.IsZero() {
		l.Time = s.opts.Now().UTC()
	}
	sum := sha256.Sum256(l.Body)
	l.Size, l.SHA256 = len(l.Body), hex.EncodeToString(sum[:])
	if len(l.Body) > s.opts.MaxBody {
		l.Body, l.Truncated = l.Body[:s.opts.MaxBody], true
	}
	key := l.Source + "\x00" + l.MessageID

	s.mu.Lock()
	defer s.mu.Unlock()
	if id, ok := s.byMID[key]; ok && l.MessageID != "" {
		l.ID = fmt.Sprintf("%016x", id)
		return nil
	}
	id := s.next
	l.ID = fmt.Sprintf("%016x", id)
	data, err := encode(l)
	if err != nil {
		return fmt.Errorf("dead-letter %s: %w", l.MessageID, err)
	}
	if len(s.entries)+1 > s.opts.MaxCount || s.bytes+int64(len(data)) > s.opts.MaxBytes {
		s.stats.Refused++
		return fmt.Errorf("dead-letter %s (%d bytes; %d letters, %d bytes held): %w",
			l.MessageID, len(data), len(s.entries), s.bytes, ErrFull)
	}
	// Written under the lock: letters are rare, and IDs stay in order.
	if err := atomicfile.WriteFile(filepath.Join(s.dir, name(id)), data, 0o600); err != nil {
		return fmt.Errorf("dead-letter %s: %w", l.MessageID, err)
	}
	s.next++
	e := entry{reason: l.Reason, source: l.Source, mid: l.MessageID, size: int64(len(data))}
	s.index(id, e)
	s.stats.Added[l.Reason]++
	if l.Truncated {
		s.stats.Truncated++
	}
	return nil
}

// encode is the file: the letter's JSON on one line, then the body.
func encode(l *Letter) ([]byte, error) {
	h, err := json.Marshal(l)
	if err != nil {
		return nil, err
	}
	return append(append(h, '\n'), l.Body...), nil
}

func readHeader(path string) (*Letter, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	line, err := bufio.NewReader(f).ReadBytes('\n')
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	l := new(Letter)
	if err := json.Unmarshal(line, l); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return l, nil
}

// List returns the letters after ID after (all from the first when
// empty), oldest first, at most limit, without their bodies; more tells
// whether others follow.
func (s *Store) List(after string, limit int) (letters []*Letter, more bool, err error) {
	from := uint64(0)
	if after != "" {
		id, err := strconv.ParseUint(after, 16, 64)
		if err != nil {
			return nil, false, fmt.Errorf("list dead letters after %q: %w", after, err)
		}
		from = id + 1
	}
	s.mu.Lock()
	var ids []uint64
	for id := range s.entries {
		if id >= from {
			ids = append(ids, id)
		}
	}
	s.mu.Unlock()
	slices.Sort(ids)
	if len(ids) > limit {
		ids, more = ids[:limit], true
	}
	for _, id := range ids {
		l, err := readHeader(filepath.Join(s.dir, name(id)))
		if errors.Is(err, os.ErrNotExist) {
			continue // purged meanwhile
		}
		if err != nil {
			l = &Letter{Reason: "damaged", Detail: err.Error()}
		}
		l.ID = fmt.Sprintf("%016x", id)
		letters = append(letters, l)
	}
	return letters, more, nil
}

// Get returns the letter with its body (as kept: see Truncated).
func (s *Store) Get(id string) (*Letter, error) {
	n, err := strconv.ParseUint(id, 16, 64)
	if err != nil || len(id) != 16 {
		return nil, fmt.Errorf("dead letter %q: %w", id, ErrNotFound)
	}
	data, err := os.ReadFile(filepath.Join(s.dir, name(n)))
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("dead letter %s: %w", id, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("dead letter %s: %w", id, err)
	}
	h, body, ok := bytes.Cut(data, []byte{'\n'})
	l := new(Letter)
	if !ok {
		return nil, fmt.Errorf("dead letter %s: %w", id, io.ErrUnexpectedEOF)
	}
	if err := json.Unmarshal(h, l); err != nil {
		return nil, fmt.Errorf("dead letter %s: %w", id, err)
	}
	l.ID, l.Body = id, body
	return l, nil
}

// Purge removes the letters with the given IDs, or every letter when all
// is set, and returns how many it removed. Unknown IDs are skipped.
func (s *Store) Purge(ids []string, all bool) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var which []uint64
	if all {
		which = slices.Collect(maps.Keys(s.entries))
	}
	for _, id := range ids {
		if n, err := strconv.ParseUint(id, 16, 64); err == nil && len(id) == 16 {
			which = append(which, n)
		}
	}
	removed := 0
	for _, id := range which {
		e, ok := s.entries[id]
		if !ok {
			continue
		}
		if err := os.Remove(filepath.Join(s.dir, name(id))); err != nil && !errors.Is(err, os.ErrNotExist) {
			return removed, fmt.Errorf("purge dead letter %016x: %w", id, err)
		}
		delete(s.entries, id)
		if e.mid != "" && s.byMID[e.source+"\x00"+e.mid] == id {
			delete(s.byMID, e.source+"\x00"+e.mid)
		}
		s.bytes -= e.size
		removed++
	}
	return removed, nil
}

// Stats returns the store's counts.
func (s *Store) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.stats
	st.Count, st.Bytes = len(s.entries), s.bytes
	st.Added = maps.Clone(s.stats.Added)
	st.Stored = map[string]int{}
	for _, e := range s.entries {
		st.Stored[e.reason]++
	}
	return st
}

// TopicProperty is the application property that carries a local
// broker's MQTT topic (source.PropTopic), copied into Letter.Topic.
const TopicProperty = "mqtt-topic"

// Of returns the letter for queued message m, dead-lettered for reason
// because of err (nil for none).
func Of(m *queue.Message, reason string, err error) *Letter {
	l := &Letter{
		Reason: reason, Source: m.Source, Topic: m.Properties[TopicProperty], MessageID: m.ID, Output: m.Output,
		ContentType: m.ContentType, ContentEncoding: m.ContentEncoding, Properties: m.Properties, Body: m.Body,
	}
	if err != nil {
		l.Detail = err.Error()
	}
	return l
}
