package source

import (
	"cmp"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"github.com/edgetpm/edgetpm/internal/backoff"
	"github.com/edgetpm/edgetpm/module/deadletter"
	"github.com/edgetpm/edgetpm/module/queue"
	"github.com/edgetpm/edgetpm/module/twin"
)

// appender is the durable queue: Append returns once the messages are on
// disk, or an error wrapping queue.ErrFull when it is full under
// backpressure.
type appender interface {
	Append(ctx context.Context, msgs ...*queue.Message) error
}

// deadLetters keeps what can never be queued; Put returns once the
// letter is durable, or an error wrapping deadletter.ErrFull.
type deadLetters interface {
	Put(l *deadletter.Letter) error
}

// SourceStats are one source's counters since it was (re)started.
type SourceStats struct {
	Connected bool `json:"connected"`
	// Received counts deliveries from the broker, redeliveries included.
	Received int64 `json:"received"`
	// Queued counts messages appended to the queue.
	Queued int64 `json:"queued"`
	// Backpressured counts appends the queue refused as full.
	Backpressured int64 `json:"backpressured"`
	// Duplicates counts redeliveries of messages already queued,
	// acknowledged and dropped.
	Duplicates int64 `json:"duplicates"`
	// DeadLettered counts messages put in the dead-letter store instead
	// of the queue (too large for it, or matching no configured topic).
	DeadLettered int64 `json:"deadLettered"`
	// Shed counts QoS 0 messages lost: taken from the broker but not
	// queued because the source stopped or its connection ended first.
	Shed int64 `json:"shed"`
	// LastError is the most recent failure (connecting, subscribing or
	// appending). It stays after recovery; Connected tells whether the
	// source is up.
	LastError string `json:"lastError,omitempty"`
}

// Manager runs the configured sources. Run owns their goroutines; Apply
// and Stats may be called at any time, from any goroutine.
type Manager struct {
	q        appender
	dead     deadLetters
	log      zerolog.Logger
	getenv   func(string) string
	idSuffix string
	// inboxBytes bounds each source's payloads between broker and queue.
	inboxBytes int64
	stateDir   string
	now        func() time.Time
	// retry paces reconnects, appendRetry the appends the queue refused.
	retry, appendRetry backoff.Backoff

	output atomic.Pointer[string] // the default output

	applyMu sync.Mutex // one Apply at a time, so the last one wins

	mu      sync.Mutex
	desired []twin.Source      // what Apply asked for last
	sources map[string]*source // running, by name
	running bool               // a Run is serving
	stopped chan struct{}      // closed when no Run is serving
	reqs    chan applyRequest  // Apply to Run
}

type applyRequest struct {
	sources []twin.Source
	started chan<- []*source
}

// Config is what a Manager needs besides its queue.
type Config struct {
	// Output is the default output, for topics that name none.
	Output string
	// Identity is who the relay runs as ("<device>/<module>"), hashed into
	// the client IDs so that they stay the same across restarts and
	// differ between devices. Empty, they are random per Manager.
	Identity string
	// StateDir keeps what each source queued last, to recognize the
	// broker's redeliveries after a restart (see recent). Empty, it is
	// kept in memory only.
	StateDir string
	// DeadLetters keeps the messages no queue bound lets in, and those no
	// configured topic matches. Nil, they are held unacknowledged.
	DeadLetters deadLetters
	// InboxBytes bounds the bytes of payloads each source holds between
	// the broker and the queue; default DefaultInboxBytes.
	InboxBytes int64
	// Getenv reads the sources' passwords.
	Getenv func(string) string
	Log    zerolog.Logger
}

// DefaultInboxBytes is Config.InboxBytes's default: with the queue pushing
// back, a source holds at most this much of its payloads in memory (and
// one more message, whatever its size, in paho's reader); the broker
// keeps the rest.
const DefaultInboxBytes = 4 << 20

// NewManager returns a Manager that appends to q.
func NewManager(q appender, c Config) *Manager {
	stopped := make(chan struct{})
	close(stopped)
	if c.Getenv == nil {
		c.Getenv = func(string) string { return "" }
	}
	m := &Manager{
		q: q, dead: c.DeadLetters, inboxBytes: cmp.Or(c.InboxBytes, DefaultInboxBytes), log: c.Log, getenv: c.Getenv, idSuffix: clientIDSuffix(c.Identity), stateDir: c.StateDir, now: time.Now,
		retry:       backoff.Backoff{Base: time.Second, Max: time.Minute},
		appendRetry: backoff.Backoff{Base: 50 * time.Millisecond, Max: 2 * time.Second},
		sources:     map[string]*source{},
		stopped:     stopped,
		reqs:        make(chan applyRequest),
	}
	m.output.Store(&c.Output)
	return m
}

// clientIDSuffix is stable for an identity, so the broker keeps its
// sessions across restarts, and distinct between devices.
func clientIDSuffix(identity string) string {
	if identity != "" {
		sum := sha256.Sum256([]byte(identity))
		return hex.EncodeToString(sum[:4])
	}
	b := make([]byte, 4)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// Apply makes the running sources match sources: it starts new ones,
// restarts changed ones and stops removed ones, then waits until each one
// started has connected or failed its first attempt (it keeps trying in
// the background). A source that failed shows in Stats, not here; the
// error is for a configuration that cannot work, in which case nothing
// changes, or for ctx ending first. defaultOutput, when not empty, replaces the default output for
// every source at once. Called before Run, Apply only records the sources
// for Run to start.
func (m *Manager) Apply(ctx context.Context, sources []twin.Source, defaultOutput string) error {
	if err := check(sources); err != nil {
		return err
	}
	m.applyMu.Lock()
	defer m.applyMu.Unlock()
	if defaultOutput != "" {
		m.output.Store(&defaultOutput)
	}
	want := make([]twin.Source, len(sources))
	for i, src := range sources { // ours from here: the caller may reuse its slices and maps
		src.Topics = slices.Clone(src.Topics)
		for j := range src.Topics {
			src.Topics[j].Properties = maps.Clone(src.Topics[j].Properties)
		}
		want[i] = src
	}
	m.mu.Lock()
	m.desired = want
	stopped := m.stopped
	m.mu.Unlock()

	started := make(chan []*source, 1)
	select {
	case m.reqs <- applyRequest{want, started}:
	case <-stopped: // the next Run starts them
		return nil
	case <-ctx.Done():
		return fmt.Errorf("apply sources: %w", context.Cause(ctx))
	}
	var wait []*source
	select {
	case wait = <-started:
	case <-ctx.Done():
		return fmt.Errorf("apply sources: %w", context.Cause(ctx))
	}
	for _, s := range wait {
		select {
		case <-s.first:
		case <-s.done:
		case <-ctx.Done():
			return fmt.Errorf("apply sources: waiting for %s: %w", s.cfg.Name, context.Cause(ctx))
		}
	}
	return nil
}

// check rejects what no retry can fix.
func check(sources []twin.Source) error {
	var errs []error
	names := map[string]bool{}
	for _, s := range sources {
		if s.Name == "" || names[s.Name] {
			errs = append(errs, fmt.Errorf("source %q: want a unique name", s.Name))
		}
		names[s.Name] = true
		if _, err := parseURL(s.URL); err != nil {
			errs = append(errs, fmt.Errorf("source %q: %w", s.Name, err))
		}
		if len(s.Topics) == 0 {
			errs = append(errs, fmt.Errorf("source %q: no topics", s.Name))
		}
		for _, t := range s.Topics {
			if t.Filter == "" || t.QoS > 1 {
				errs = append(errs, fmt.Errorf("source %q: topic %q: want a filter and QoS 0 or 1", s.Name, t.Filter))
			}
		}
	}
	return errors.Join(errs...)
}

// Run starts the sources Apply asked for and keeps them in step with it
// until ctx ends; then it stops them, leaving their sessions on the
// brokers, and returns once every goroutine has finished.
func (m *Manager) Run(ctx context.Context) error {
	m.mu.Lock()
	if m.running {
		m.mu.Unlock()
		return errors.New("source: Run is already running")
	}
	m.running = true
	stopped := make(chan struct{})
	m.stopped = stopped
	desired := m.desired
	m.mu.Unlock()

	var wg sync.WaitGroup
	defer func() {
		m.mu.Lock()
		for _, s := range m.sources {
			s.cancel()
		}
		m.mu.Unlock()
		wg.Wait()
		m.mu.Lock()
		clear(m.sources)
		m.running = false
		close(stopped)
		m.mu.Unlock()
	}()
	m.reconcile(ctx, &wg, desired)
	for {
		select {
		case <-ctx.Done():
			return nil
		case req := <-m.reqs:
			req.started <- m.reconcile(ctx, &wg, req.sources)
		}
	}
}

// reconcile stops the sources that are not wanted as they run, waits for
// them (so that a client ID is never connected twice), and starts the
// missing ones, which it returns.
func (m *Manager) reconcile(ctx context.Context, wg *sync.WaitGroup, want []twin.Source) []*source {
	byName := map[string]twin.Source{}
	for _, c := range want {
		byName[c.Name] = c
	}
	var stopping []*source
	m.mu.Lock()
	for name, s := range m.sources {
		c, ok := byName[name]
		switch {
		case !ok:
			s.stop(&ending{forget: true})
		case !reflect.DeepEqual(c, s.cfg):
			s.stop(endingFor(s, c))
		default:
			continue
		}
		stopping = append(stopping, s)
		delete(m.sources, name)
	}
	m.mu.Unlock()
	for _, s := range stopping {
		<-s.done
	}

	var started []*source
	for _, c := range want {
		m.mu.Lock()
		_, ok := m.sources[c.Name]
		m.mu.Unlock()
		if ok {
			continue
		}
		sctx, cancel := context.WithCancel(ctx)
		s := newSource(m, c, cancel)
		m.mu.Lock()
		m.sources[c.Name] = s
		m.mu.Unlock()
		wg.Go(func() { s.run(sctx) })
		started = append(started, s)
	}
	return started
}

// Stats returns each running source's counters, by name.
func (m *Manager) Stats() map[string]SourceStats {
	m.mu.Lock()
	defer m.mu.Unlock()
	st := make(map[string]SourceStats, len(m.sources))
	for name, s := range m.sources {
		st[name] = s.stats()
	}
	return st
}
