package source

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/url"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/rs/zerolog"

	"github.com/edgetpm/edgetpm/internal/backoff"
	"github.com/edgetpm/edgetpm/internal/batchconn"
	"github.com/edgetpm/edgetpm/internal/tlsconfig"
	"github.com/edgetpm/edgetpm/module/edgehub"
	"github.com/edgetpm/edgetpm/module/twin"
)

const (
	// connectTimeout bounds the dial with TLS, then the MQTT handshake.
	connectTimeout = 5 * time.Second
	keepAlive      = 30 * time.Second
	// cleanupTimeout bounds unsubscribing or ending a session on a stop.
	cleanupTimeout = 2 * time.Second
	// inbox holds what paho handed over and the worker has not appended
	// yet: more than Mosquitto's default in-flight window (20), so that it
	// is the broker that holds back and paho's reader, which also reads
	// the PINGRESP, rarely waits for us.
	inboxSize = 1024
	// An Append takes up to maxBatch messages or maxBatchBytes of bodies,
	// so that one fsync covers many: a deep batch keeps up with a broker
	// that lets many messages be in flight.
	maxBatch      = 1024
	maxBatchBytes = 4 << 20
)

// source is one broker's client, restarted as a whole when its
// configuration changes.
type source struct {
	m        *Manager
	cfg      twin.Source
	ep       endpoint
	clientID string
	origin   string // "mqtt:" and the name: the queue messages' Source
	log      zerolog.Logger

	cancel context.CancelFunc
	end    atomic.Pointer[ending] // set before cancel; nil at shutdown
	first  chan struct{}          // closed after the first connection attempt
	done   chan struct{}          // closed when run returns
	inbox  chan delivery
	room   *budget   // bytes of the payloads in inbox and being appended
	recent *recent   // set by run before anything else
	props  propCache // the work goroutine's

	subscribed bool // this process subscribed in the broker's session; run's goroutine only

	connected                                   atomic.Bool
	received, queued, backpressured, duplicates atomic.Int64
	deadLettered, shedCount                     atomic.Int64
	lastErr                                     atomic.Pointer[string]
	warnedStray, warnedRecent                   atomic.Bool
}

// ending says what a stop does to the broker's session: nothing at
// shutdown (nil), end it when the source goes away, or drop the
// subscriptions the new configuration no longer has.
type ending struct {
	forget bool
	keep   map[string]bool // filters that stay subscribed
}

func endingFor(s *source, next twin.Source) *ending {
	if ep, err := parseURL(next.URL); err != nil || ep.addr != s.ep.addr {
		return &ending{forget: true} // another broker
	}
	keep := map[string]bool{}
	for _, t := range next.Topics {
		keep[t.Filter] = true
	}
	return &ending{keep: keep}
}

// delivery is a message paho handed over, with the client of the
// connection it came on (the only one it can be acknowledged on).
type delivery struct {
	cli   mqtt.Client
	msg   mqtt.Message
	topic *twin.Topic
	cost  int64 // bytes taken from the source's budget
}

func newSource(m *Manager, cfg twin.Source, cancel context.CancelFunc) *source {
	ep, _ := parseURL(cfg.URL) // checked by Apply
	id := "edge-relay-" + cfg.Name + "-" + m.idSuffix
	return &source{
		m: m, cfg: cfg, ep: ep, clientID: id, origin: "mqtt:" + cfg.Name,
		log:    m.log.With().Str("source", cfg.Name).Str("client_id", id).Logger(),
		cancel: cancel,
		first:  make(chan struct{}),
		done:   make(chan struct{}),
		inbox:  make(chan delivery, inboxSize),
		room:   newBudget(m.inboxBytes),
	}
}

func (s *source) stop(e *ending) {
	s.end.Store(e)
	s.cancel()
}

func (s *source) setErr(err error) {
	msg := err.Error()
	s.lastErr.Store(&msg)
}

func (s *source) stats() SourceStats {
	st := SourceStats{
		Connected: s.connected.Load(), Received: s.received.Load(),
		Queued: s.queued.Load(), Backpressured: s.backpressured.Load(), Duplicates: s.duplicates.Load(),
		DeadLettered: s.deadLettered.Load(), Shed: s.shedCount.Load(),
	}
	if e := s.lastErr.Load(); e != nil {
		st.LastError = *e
	}
	return st
}

// run keeps the source connected until ctx ends, then lets the worker
// finish before it disconnects, so that what was appended is acknowledged.
func (s *source) run(ctx context.Context) {
	defer close(s.done)
	path := ""
	if s.m.stateDir != "" {
		path = filepath.Join(s.m.stateDir, s.cfg.Name+".recent")
	}
	r, err := openRecent(path, s.clientID+"@"+s.ep.addr)
	if err != nil {
		// Redeliveries after a restart will be queued again.
		s.log.Warn().Err(err).Msg("recent messages kept in memory only")
		r, _ = openRecent("", "")
	}
	s.recent = r
	var wg sync.WaitGroup
	wg.Go(func() { s.work(ctx) })
	cli := s.keepConnected(ctx)
	wg.Wait()
	s.finish(ctx, cli)
}

// keepConnected connects, and connects again after every failure with
// jittered backoff, never giving up. It returns the client that was
// connected when ctx ended, if one was.
func (s *source) keepConnected(ctx context.Context) mqtt.Client {
	b := s.m.retry
	for attempt := 0; ; attempt++ {
		cli, lost, err := s.connect(ctx)
		if err == nil {
			s.connected.Store(true)
		} else if ctx.Err() == nil {
			s.setErr(err)
		}
		if attempt == 0 {
			close(s.first) // Apply waits for this, and then reads Stats
		}
		if err == nil {
			b.Reset()
			s.log.Info().Str("url", s.cfg.URL).Msg("source connected")
			select {
			case <-ctx.Done():
				s.connected.Store(false)
				return cli
			case err = <-lost:
				s.connected.Store(false)
				if err == nil {
					err = errors.New("connection lost")
				}
				err = fmt.Errorf("connection to %s: %w", s.ep.addr, err)
				s.setErr(err)
			}
		}
		if ctx.Err() != nil {
			return nil
		}
		wait := b.Next()
		s.log.Warn().Err(err).Dur("retry_in", wait).Msg("source connection")
		if backoff.Sleep(ctx, wait) != nil {
			return nil
		}
	}
}

// connect makes one connection and, unless the broker kept our session
// with the subscriptions this process made, subscribes (subscribing again
// would make the broker resend its retained messages).
func (s *source) connect(ctx context.Context) (mqtt.Client, <-chan error, error) {
	lost := make(chan error, 1)
	opts, done, err := s.options(ctx, false)
	if err != nil {
		return nil, nil, err
	}
	opts.SetDefaultPublishHandler(s.handler(ctx)).
		SetConnectionLostHandler(func(_ mqtt.Client, err error) {
			select {
			case lost <- err:
			default:
			}
		})
	cli := mqtt.NewClient(opts)
	tok := cli.Connect()
	<-tok.Done() // bounded: the dial follows ctx and the connection is closed when ctx ends
	done()
	if err := tok.Error(); err != nil {
		return nil, nil, fmt.Errorf("connect to %s: %w", s.ep.addr, err)
	}
	if ctx.Err() != nil {
		cli.Disconnect(0)
		return nil, nil, context.Cause(ctx)
	}
	if !tok.(*mqtt.ConnectToken).SessionPresent() {
		if err := s.recent.forget(); err != nil {
			s.log.Warn().Err(err).Msg("recent messages")
		}
	}
	if !tok.(*mqtt.ConnectToken).SessionPresent() || !s.subscribed {
		if err := s.subscribe(ctx, cli); err != nil {
			cli.Disconnect(0)
			return nil, nil, err
		}
		s.subscribed = true
	}
	return cli, lost, nil
}

// options configures one connection attempt. done must be called once the
// attempt is over, to stop the closing of its connection when ctx ends.
func (s *source) options(ctx context.Context, clean bool) (opts *mqtt.ClientOptions, done func(), err error) {
	var tlsCfg *tls.Config
	if s.ep.tls {
		if tlsCfg, err = s.tlsConfig(); err != nil {
			return nil, nil, err
		}
	}
	password := ""
	if env := s.cfg.PasswordEnv; env != "" {
		// twin.Config.Validate refuses this already; the password must
		// not go out in clear whoever configured the source.
		if !s.ep.tls {
			return nil, nil, fmt.Errorf("password: never sent over plain TCP to %s; use ssl:// or mqtts://", s.ep.addr)
		}
		if password = s.m.getenv(env); password == "" {
			return nil, nil, fmt.Errorf("password: environment variable %s is not set", env)
		}
	}
	var mu sync.Mutex
	var stops []func() bool
	done = func() {
		mu.Lock()
		defer mu.Unlock()
		for _, stop := range stops {
			stop()
		}
	}
	scheme := "tcp://"
	if s.ep.tls {
		scheme = "ssl://"
	}
	opts = mqtt.NewClientOptions().
		AddBroker(scheme + s.ep.addr).
		SetClientID(s.clientID).
		SetUsername(s.cfg.Username).
		SetPassword(password).
		SetProtocolVersion(4). // no second attempt with MQTT 3.1 after a refusal
		// A persistent session: the broker keeps QoS 1 messages, sent or
		// not, until we acknowledge them, across connections.
		SetCleanSession(clean).
		// A client per connection: the broker re-sends what was in
		// flight, and paho's store of it would only cost.
		SetStore(edgehub.NoStore{}).
		// One message at a time, in order: a message the queue refuses
		// holds back the ones behind it.
		SetOrderMatters(true).
		SetAutoAckDisabled(true). // PUBACK only once the queue has it
		SetAutoReconnect(false).  // keepConnected does, without giving up
		SetConnectRetry(false).
		SetResumeSubs(false).
		SetKeepAlive(keepAlive).
		SetPingTimeout(10 * time.Second).
		SetWriteTimeout(10 * time.Second).
		SetConnectTimeout(connectTimeout).
		SetCustomOpenConnectionFn(func(*url.URL, mqtt.ClientOptions) (net.Conn, error) {
			conn, err := dial(ctx, s.ep.addr, tlsCfg)
			if err != nil {
				return nil, err
			}
			mu.Lock()
			stops = append(stops, context.AfterFunc(ctx, func() { conn.Close() }))
			mu.Unlock()
			return conn, nil
		})
	return opts, done, nil
}

func dial(ctx context.Context, addr string, tlsCfg *tls.Config) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, connectTimeout)
	defer cancel()
	d := &net.Dialer{KeepAlive: keepAlive}
	var conn net.Conn
	var err error
	if tlsCfg == nil {
		conn, err = d.DialContext(ctx, "tcp", addr)
	} else {
		conn, err = (&tls.Dialer{NetDialer: d, Config: tlsCfg}).DialContext(ctx, "tcp", addr)
	}
	if err != nil {
		return nil, err
	}
	return batchconn.New(conn), nil
}

// tlsConfig trusts the system's roots and the source's CA file, read
// again on every attempt so that a renewed file is picked up, and checks
// the broker's certificate against the URL's host.
func (s *source) tlsConfig() (*tls.Config, error) {
	roots, err := tlsconfig.TrustFile(s.cfg.CAFile)
	if err != nil {
		return nil, err
	}
	host, _, _ := net.SplitHostPort(s.ep.addr)
	return tlsconfig.Client(roots, host), nil
}

// subscribe subscribes to every topic filter at its QoS; a filter the
// broker refuses (an ACL) fails the connection, to be retried.
func (s *source) subscribe(ctx context.Context, cli mqtt.Client) error {
	filters := map[string]byte{}
	for _, t := range s.cfg.Topics {
		filters[t.Filter] = t.QoS
	}
	tok := cli.SubscribeMultiple(filters, nil) // no routes: everything goes to the default handler
	if err := wait(ctx, tok); err != nil {
		return fmt.Errorf("subscribe: %w", err)
	}
	var refused []string
	for f, granted := range tok.(*mqtt.SubscribeToken).Result() {
		switch {
		case granted == 0x80:
			refused = append(refused, f)
		case granted < filters[f]:
			s.log.Warn().Str("filter", f).Uint8("qos", granted).Msg("the broker granted a lower QoS; messages may be lost")
		}
	}
	if len(refused) > 0 {
		slices.Sort(refused)
		return fmt.Errorf("subscribe: the broker refused %s", strings.Join(refused, ", "))
	}
	return nil
}

// finish leaves the broker as the stop asks: the session kept, trimmed to
// the filters that stay, or ended.
func (s *source) finish(ctx context.Context, cli mqtt.Client) {
	e := s.end.Load()
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
	defer cancel()
	if cli != nil {
		if e != nil && !e.forget {
			var drop []string
			for _, t := range s.cfg.Topics {
				if !e.keep[t.Filter] {
					drop = append(drop, t.Filter)
				}
			}
			if len(drop) > 0 {
				if err := wait(ctx, cli.Unsubscribe(drop...)); err != nil {
					s.log.Warn().Err(err).Strs("filters", drop).Msg("unsubscribe")
				}
			}
		}
		cli.Disconnect(250)
	}
	ended := false
	if e != nil && e.forget {
		if err := s.forget(ctx); err != nil {
			s.log.Warn().Err(err).Msg("could not end the session on the broker")
		} else {
			ended = true
			s.log.Info().Msg("session ended")
		}
	}
	if err := s.recent.close(ended); err != nil {
		s.log.Warn().Err(err).Msg("recent messages")
	}
}

// forget ends our session on the broker: a clean-session connect
// discards it with its subscriptions and the messages kept for it.
func (s *source) forget(ctx context.Context) error {
	opts, done, err := s.options(ctx, true)
	if err != nil {
		return err
	}
	cli := mqtt.NewClient(opts)
	tok := cli.Connect()
	<-tok.Done()
	done()
	if err := tok.Error(); err != nil {
		return fmt.Errorf("connect to %s: %w", s.ep.addr, err)
	}
	cli.Disconnect(250)
	return nil
}

// wait waits for a paho token or ctx.
func wait(ctx context.Context, t mqtt.Token) error {
	select {
	case <-t.Done():
		return t.Error()
	case <-ctx.Done():
		return context.Cause(ctx)
	}
}
