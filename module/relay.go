package main

import (
	"context"
	"encoding/json"
	"strings"
	"sync/atomic"
	"time"

	"github.com/google/go-tpm/tpm2"
	"github.com/rs/zerolog"

	"github.com/edgetpm/edgetpm/module/edgehub"
	"github.com/edgetpm/edgetpm/module/twin"
)

func tpmHandle(h uint32) tpm2.TPMHandle { return tpm2.TPMHandle(h) }

// relay forwards what arrives on inputs to the configured output and
// answers direct methods. The durable queue between the two comes with
// the store-and-forward work; until then an input is acknowledged only
// once edgeHub has acknowledged its copy, so nothing is lost either way.
type relay struct {
	log     zerolog.Logger
	level   *logLevel
	session *edgehub.Session
	config  atomic.Pointer[twin.Config]
	started time.Time

	received, sent atomic.Int64
}

// apply puts a configuration into effect, live.
func (r *relay) apply(c twin.Config) error {
	l, err := zerolog.ParseLevel(c.LogLevel)
	if err != nil {
		return err
	}
	r.level.Store(int32(l))
	r.config.Store(&c)
	return nil
}

// forward relays an input message to the output, keeping its $.mid.
func (r *relay) forward(ctx context.Context, s *edgehub.Session, input string, m *edgehub.Message) error {
	r.received.Add(1)
	out := &edgehub.Message{Body: m.Body, ID: m.ID, CorrelationID: m.CorrelationID, ContentType: m.ContentType, ContentEncoding: m.ContentEncoding, Properties: m.Properties}
	if out.Properties == nil {
		out.Properties = map[string]string{}
	}
	out.Properties["input"] = input
	if err := s.Publish(ctx, r.config.Load().Output, out); err != nil {
		return err
	}
	r.sent.Add(1)
	return nil
}

// stats is what the stats method returns.
type stats struct {
	Received      int64  `json:"received"`
	Sent          int64  `json:"sent"`
	TokenRenewals int64  `json:"tokenRenewals"`
	Uptime        string `json:"uptime"`
	Output        string `json:"output"`
	LogLevel      string `json:"logLevel"`
}

func (r *relay) stats() stats {
	st := stats{Received: r.received.Load(), Sent: r.sent.Load(), Uptime: time.Since(r.started).Round(time.Second).String(), LogLevel: r.level.get().String()}
	if r.session != nil {
		st.TokenRenewals = r.session.TokenRenewals()
	}
	if c := r.config.Load(); c != nil {
		st.Output = c.Output
	}
	return st
}

// method answers direct methods: ping, stats, flush, setLogLevel.
func (r *relay) method(_ context.Context, name string, payload []byte) (int, []byte) {
	answer := func(status int, v any) (int, []byte) {
		b, _ := json.Marshal(v)
		return status, b
	}
	switch name {
	case "ping":
		return answer(200, map[string]any{"pong": true, "time": time.Now().UTC()})
	case "stats":
		return answer(200, r.stats())
	case "flush":
		// Inputs are relayed as they come: nothing waits to be flushed.
		return answer(200, map[string]any{"flushed": 0})
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
		r.level.Store(int32(l))
		r.log.Info().Str("level", l.String()).Msg("log level set")
		return answer(200, map[string]string{"level": l.String()})
	}
	return answer(404, map[string]string{"message": "no method " + name + "; try ping, stats, flush or setLogLevel"})
}
