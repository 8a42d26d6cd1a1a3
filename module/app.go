package main

import (
	"context"
	"encoding/json"
	"runtime/debug"
	"strings"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"github.com/edgetpm/edgetpm/module/deadletter"
	"github.com/edgetpm/edgetpm/module/edgehub"
	"github.com/edgetpm/edgetpm/module/relay"
	"github.com/edgetpm/edgetpm/module/source"
	"github.com/edgetpm/edgetpm/module/twin"
)

// app ties the module together: the configuration in effect, the
// pipeline, the direct methods and the reported summary.
type app struct {
	log     zerolog.Logger
	level   *logLevel
	started time.Time

	session *edgehub.Session
	relay   *relay.Relay
	sources *source.Manager
	dead    *deadletter.Store

	config atomic.Pointer[twin.Config]
}

// apply puts a configuration into effect, live. Before the pipeline exists
// (the last good configuration at start) it only records it.
func (a *app) apply(ctx context.Context, c twin.Config) error {
	l, err := zerolog.ParseLevel(c.LogLevel)
	if err != nil {
		return err
	}
	if a.relay != nil {
		ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		if err := a.sources.Apply(ctx, c.Sources, c.Output); err != nil {
			return err
		}
		a.relay.SetConfig(c) // with the queues' bounds, shared by the priorities
	}
	a.level.Store(int32(l))
	a.config.Store(&c)
	return nil
}

// stats is what the stats method returns and the summary reports.
type stats struct {
	Uptime        string                        `json:"uptime"`
	Connected     bool                          `json:"connected"`
	TokenRenewals int64                         `json:"tokenRenewals"`
	Output        string                        `json:"output"`
	LogLevel      string                        `json:"logLevel"`
	Queue         *queueStats                   `json:"queue,omitempty"`
	Sources       map[string]source.SourceStats `json:"sources,omitempty"`
	DeadLetters   *deadletter.Stats             `json:"deadLetters,omitempty"`
}

type queueStats struct {
	Depth        int64            `json:"depth"`
	Bytes        int64            `json:"bytes"`
	DiskBytes    int64            `json:"diskBytes"`
	OldestAgeSec float64          `json:"oldestAgeSeconds"`
	Appended     int64            `json:"appended"`
	Acked        int64            `json:"acknowledged"`
	Dropped      map[string]int64 `json:"dropped"`
	Corrupt      int64            `json:"corrupt"`
}

func (a *app) stats() stats {
	st := stats{Uptime: time.Since(a.started).Round(time.Second).String(), LogLevel: a.level.get().String()}
	if c := a.config.Load(); c != nil {
		st.Output = c.Output
	}
	if a.session != nil {
		st.Connected, st.TokenRenewals = a.session.Connected(), a.session.TokenRenewals()
	}
	if a.relay != nil {
		q := a.relay.QueueStats() // every priority's
		st.Queue = &queueStats{q.Depth, q.Bytes, q.DiskBytes, q.OldestAge.Seconds(), q.Appended, q.Acked, q.Dropped, q.Corrupt}
	}
	if a.sources != nil {
		st.Sources = a.sources.Stats()
	}
	if a.dead != nil {
		d := a.dead.Stats()
		st.DeadLetters = &d
	}
	return st
}

// report sends the summary to reported properties every reportInterval
// while connected, at most that often. The interval in effect is checked
// every second, so that a shorter one applies at once.
func (a *app) report(ctx context.Context, s *edgehub.Session) error {
	last := time.Now()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(time.Second):
		}
		interval := time.Minute
		if c := a.config.Load(); c != nil {
			interval = time.Duration(c.ReportInterval)
		}
		if time.Since(last) < interval || !s.Connected() {
			continue
		}
		last = time.Now()
		patch, _ := json.Marshal(map[string]any{"summary": a.stats()})
		rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		if err := s.ReportProperties(rctx, patch); err != nil && ctx.Err() == nil {
			a.log.Debug().Err(err).Msg("report summary")
		}
		cancel()
	}
}

// method answers direct methods: ping, stats, flush, setLogLevel and
// the dead-letter methods (deadletter.Store.Method).
func (a *app) method(ctx context.Context, name string, payload []byte) (int, []byte) {
	answer := func(status int, v any) (int, []byte) {
		b, _ := json.Marshal(v)
		return status, b
	}
	if a.dead != nil {
		if status, b, ok := a.dead.Method(name, payload); ok {
			return status, b
		}
	}
	switch name {
	case "ping":
		return answer(200, map[string]any{"pong": true, "time": time.Now().UTC()})
	case "stats":
		return answer(200, a.stats())
	case "flush":
		fctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		defer cancel()
		n, err := a.relay.Flush(fctx)
		if err != nil {
			return answer(504, map[string]string{"message": "flush: " + err.Error()})
		}
		return answer(200, map[string]any{"flushed": n})
	case "setLogLevel":
		var req struct {
			Level string `json:"level"`
		}
		if err := json.Unmarshal(payload, &req); err != nil {
			return answer(400, map[string]string{"message": "want {\"level\":\"debug|info|warn|error\"}"})
		}
		l, err := zerolog.ParseLevel(strings.ToLower(req.Level))
		if err != nil || req.Level == "" || l < zerolog.DebugLevel || l > zerolog.ErrorLevel {
			return answer(400, map[string]string{"message": "level must be debug, info, warn or error"})
		}
		a.level.Store(int32(l))
		a.log.Info().Str("level", l.String()).Msg("log level set")
		return answer(200, map[string]string{"level": l.String()})
	}
	return answer(404, map[string]string{"message": "no method " + name + "; try ping, stats, flush, setLogLevel, " +
		deadletter.MethodList + ", " + deadletter.MethodGet + " or " + deadletter.MethodPurge})
}

// Runtime settings the relay runs with unless GOGC or GOMEMLIMIT say
// otherwise, measured with BenchmarkBridge (docs/figures.md).
//
// Every reading allocates (the MQTT clients most of all) and little stays
// live, so at Go's default GOGC of 100 the relay collected two to three
// times per thousand readings; at 400 a fifth as often, for 8-15 % less
// CPU per reading, with a heap of a few MiB becoming five times that. The
// soft limit keeps a large live heap (big messages in flight) from
// growing five-fold: near it the GC runs as often as it must.
const (
	gcPercent   = 400
	memoryLimit = 256 << 20
)

// tuneRuntime applies gcPercent and memoryLimit where the environment
// leaves them unset.
func tuneRuntime(getenv func(string) string) {
	if getenv("GOGC") == "" {
		debug.SetGCPercent(gcPercent)
	}
	if getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(memoryLimit)
	}
}
