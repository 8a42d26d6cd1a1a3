package source

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/edgetpm/edgetpm/internal/backoff"
	"github.com/edgetpm/edgetpm/internal/testharness/syncbuf"
	"github.com/edgetpm/edgetpm/internal/testharness/until"
	"github.com/edgetpm/edgetpm/module/deadletter"
	"github.com/edgetpm/edgetpm/module/queue"
)

// memQueue is an appender in memory that records what it takes and
// refuses while refuse is set.
type memQueue struct {
	mu     sync.Mutex
	msgs   []*queue.Message
	refuse error
	calls  int
	// onAppend, when set, runs after each append that took messages.
	onAppend func()
}

func (q *memQueue) Append(ctx context.Context, msgs ...*queue.Message) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	q.mu.Lock()
	q.calls++
	if err := q.refuse; err != nil {
		q.mu.Unlock()
		return err
	}
	q.msgs = append(q.msgs, msgs...)
	after := q.onAppend
	q.mu.Unlock()
	if after != nil {
		after()
	}
	return nil
}

func (q *memQueue) setRefuse(err error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.refuse = err
}

func (q *memQueue) messages() []*queue.Message {
	q.mu.Lock()
	defer q.mu.Unlock()
	return append([]*queue.Message(nil), q.msgs...)
}

// bodies returns the bodies taken from topic, in order.
func (q *memQueue) bodies(topic string) []string {
	var out []string
	for _, m := range q.messages() {
		if m.Properties[PropTopic] == topic {
			out = append(out, string(m.Body))
		}
	}
	return out
}

var errFull = fmt.Errorf("append: %w", queue.ErrFull)

// env is a mutable environment for getenv.
type env struct {
	mu   sync.Mutex
	vars map[string]string
}

func newEnv(vars map[string]string) *env { return &env{vars: maps.Clone(vars)} }

func (e *env) get(k string) string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.vars[k]
}

func (e *env) set(k, v string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.vars[k] = v
}

// newManager returns a Manager with quick retries, logging to the test,
// running as a module of its own, so that its client IDs are stable.
func newManager(t testing.TB, q appender, getenv func(string) string, log zerolog.Logger) *Manager {
	dl, err := deadletter.Open(t.TempDir(), deadletter.Options{})
	if err != nil {
		t.Fatal(err)
	}
	m := NewManager(q, Config{Output: "telemetry", Identity: "plant1/" + t.Name(), Getenv: getenv, DeadLetters: dl, Log: log})
	m.retry = backoff.Backoff{Base: 50 * time.Millisecond, Max: 300 * time.Millisecond}
	m.appendRetry = backoff.Backoff{Base: 20 * time.Millisecond, Max: 100 * time.Millisecond}
	return m
}

// newManagerDL is newManager with the dead-letter store dl.
func newManagerDL(t testing.TB, q appender, dl *deadletter.Store) *Manager {
	m := newManager(t, q, nil, testLog(t))
	m.dead = dl
	return m
}

func testLog(t testing.TB) zerolog.Logger {
	return zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.InfoLevel)
}

// run runs m.Run until stop or the end of the test; stop returns Run's
// error once it has returned.
func run(t testing.TB, m *Manager) (stop func() error) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	var once sync.Once
	var err error
	stop = func() error {
		once.Do(func() {
			cancel()
			select {
			case err = <-done:
			case <-time.After(10 * time.Second):
				err = errors.New("Run did not return 10 s after its context ended")
			}
		})
		return err
	}
	t.Cleanup(func() {
		if err := stop(); err != nil {
			t.Error(err)
		}
	})
	until.True(t, "Run serving", func() bool {
		m.mu.Lock()
		defer m.mu.Unlock()
		return m.running
	})
	return stop
}

// syncBuffer is written by one goroutine and read by the test.
type syncBuffer = syncbuf.Buffer
