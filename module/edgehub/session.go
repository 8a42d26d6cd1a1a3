package edgehub

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/eclipse/paho.mqtt.golang/packets"
	"github.com/rs/zerolog"

	"github.com/edgetpm/edgetpm/internal/backoff"
	"github.com/edgetpm/edgetpm/internal/batchconn"
	"github.com/edgetpm/edgetpm/internal/sas"
	"github.com/edgetpm/edgetpm/internal/tlsconfig"
)

// signer signs a SAS token's string-to-sign with the identity's key: the
// workload API, the TPM, or a key from a connection string.
type signer interface {
	Sign(ctx context.Context, data []byte) ([]byte, error)
}

// Defaults.
const (
	DefaultTokenTTL  = time.Hour
	DefaultKeepAlive = time.Minute
	// DefaultTwinTimeout bounds a twin request's round trip: edgeHub
	// answers in milliseconds, and an answer lost on the way would
	// otherwise be waited for until the connection ends.
	DefaultTwinTimeout = 30 * time.Second
	// renewFraction of a token's life is when it is replaced, as the C SDK
	// does (SAS_REFRESH_MULTIPLIER, docs/edge-protocol.md#sas-tokens-for-edgehub).
	renewFraction = 0.8
)

// Config is a Session's identity, trust and handlers. The handlers run on
// their own goroutines; they must be safe for concurrent use. They get the
// ctx of Run and must return soon after it ends: Run returns only once
// they have.
type Config struct {
	Identity Identity
	Signer   signer
	// RootCAs verify the server: the workload API's trust bundle; nil is
	// the system's roots.
	RootCAs   *x509.CertPool
	TokenTTL  time.Duration
	KeepAlive time.Duration
	// TwinTimeout bounds each twin request from its publish to its
	// answer (default DefaultTwinTimeout).
	TwinTimeout time.Duration
	Backoff     backoff.Backoff // default 1 s to 1 min

	// Input handles a message on a module input; the message is
	// acknowledged (PUBACK, edgeHub's "complete") only when it returns nil.
	Input func(ctx context.Context, input string, m *Message) error
	// Method answers a direct method call with a status and a JSON body.
	Method func(ctx context.Context, name string, payload []byte) (status int, response []byte)
	// Desired receives desired property patches, "$version" included.
	Desired func(ctx context.Context, patch []byte)
	// Connected runs after every connect, once subscriptions are in place
	// (a twin GET belongs there: patches are not queued while away).
	Connected func(ctx context.Context)
	// Refused, when set, runs each time the hub refuses the token
	// (ErrNotAuthorized), before the retry: the identity itself may be
	// stale. An error from it ends Run with that error.
	Refused func(ctx context.Context) error

	Log zerolog.Logger
	Now func() time.Time
}

// Session is one identity's connection, kept up by Run.
type Session struct {
	cfg Config
	// events is the telemetry topic up to the property bag.
	events string

	password atomic.Pointer[string]

	mu      sync.Mutex
	cli     mqtt.Client   // set while connected
	gen     uint64        // counts connections; cli's is gen
	changed chan struct{} // closed, and replaced, as cli comes or goes
	lost    chan error

	rid     atomic.Uint64
	pending sync.Map // rid -> chan response

	renewals atomic.Int64
	wg       sync.WaitGroup // Connected hooks and handlers, joined by Run
	ending   bool           // Run is joining wg; guarded by mu
}

// New checks cfg and returns a Session that Run connects.
func New(cfg Config) (*Session, error) {
	id := cfg.Identity
	if id.HubHostName == "" || id.DeviceID == "" || id.Host == "" {
		return nil, errors.New("edgehub: identity needs a hub, a device ID and a host")
	}
	if cfg.Signer == nil {
		return nil, errors.New("edgehub: no signer")
	}
	if cfg.TokenTTL <= 0 {
		cfg.TokenTTL = DefaultTokenTTL
	}
	if cfg.KeepAlive <= 0 {
		cfg.KeepAlive = DefaultKeepAlive
	}
	if cfg.TwinTimeout <= 0 {
		cfg.TwinTimeout = DefaultTwinTimeout
	}
	if cfg.Backoff.Base <= 0 {
		cfg.Backoff = backoff.Backoff{Base: time.Second, Max: time.Minute}
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Session{cfg: cfg, events: cfg.Identity.prefix() + "/messages/events/", changed: make(chan struct{}), lost: make(chan error, 1)}, nil
}

// Connected reports whether the session is connected now.
func (s *Session) Connected() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cli != nil
}

// TokenRenewals counts reconnects made to replace a token.
func (s *Session) TokenRenewals() int64 { return s.renewals.Load() }

// ErrNotAuthorized is CONNACK 5: edgeHub refused the token.
var ErrNotAuthorized = errors.New("not authorized (CONNACK 5)")

// Run connects and keeps the session connected until ctx ends: tokens are
// renewed at 80% of their life by reconnecting, and every failure is
// retried with jittered backoff, without giving up unless Config.Refused
// says so.
func (s *Session) Run(ctx context.Context) error {
	log := s.cfg.Log
	// The gateway's name, whatever address is dialled (Identity.Address).
	tlsCfg := tlsconfig.Client(s.cfg.RootCAs, s.cfg.Identity.Host)
	opts := mqtt.NewClientOptions().
		AddBroker("tls://" + s.cfg.Identity.address()).
		SetClientID(s.cfg.Identity.clientID()).
		// MQTT 3.1.1, the version IoT Hub and edgeHub speak; without it
		// paho tries MQTT 3.1 after a refused CONNECT and reports the
		// hub's CONNACK 5 as an unacceptable protocol version.
		SetProtocolVersion(4).
		SetCredentialsProvider(func() (string, string) { return s.cfg.Identity.username(), *s.password.Load() }).
		SetCustomOpenConnectionFn(func(u *url.URL, o mqtt.ClientOptions) (net.Conn, error) {
			d := tls.Dialer{NetDialer: &net.Dialer{Timeout: o.ConnectTimeout}, Config: tlsCfg}
			c, err := d.DialContext(ctx, "tcp", u.Host)
			if err != nil {
				return nil, err
			}
			// A window of publishes goes out in a few TLS records.
			return batchconn.New(c), nil
		}).
		// A clean session: subscriptions are made again on every connect
		// and publishes this Session re-sends itself, so paho's store must
		// not replay them a second time.
		SetCleanSession(true).
		SetStore(NoStore{}).
		SetAutoReconnect(false).
		SetConnectRetry(false).
		SetOrderMatters(false).
		SetAutoAckDisabled(true).
		SetKeepAlive(s.cfg.KeepAlive).
		SetConnectTimeout(30 * time.Second).
		// Bounds a write, and a publish caught by a lost connection.
		SetWriteTimeout(10 * time.Second).
		SetConnectionLostHandler(func(_ mqtt.Client, err error) {
			select {
			case s.lost <- err:
			default:
			}
		})
	s.mu.Lock()
	s.ending = false
	s.mu.Unlock()
	defer func() {
		// No handler starts from here on, so none is added to wg while
		// it is waited for.
		s.mu.Lock()
		s.ending = true
		s.mu.Unlock()
		s.wg.Wait()
	}()
	b := s.cfg.Backoff
	for {
		// A client per connection: paho hands a publish caught by a lost
		// connection to the next connection of the same client, ahead of
		// the ones sent again before it, which would break the order.
		cli := mqtt.NewClient(opts)
		expiry, err := s.connect(ctx, cli)
		if err == nil {
			b.Reset()
			err = s.serve(ctx, cli, expiry)
			if err == nil { // renewal: reconnect at once
				s.renewals.Add(1)
				continue
			}
		}
		if ctx.Err() != nil {
			return nil
		}
		if errors.Is(err, ErrNotAuthorized) && s.cfg.Refused != nil {
			if err := s.cfg.Refused(ctx); err != nil {
				return err
			}
		}
		wait := b.Next()
		log.Warn().Err(err).Dur("retry_in", wait).Msg("edgehub connection")
		if backoff.Sleep(ctx, wait) != nil {
			return nil
		}
	}
}

// connect signs a fresh token, connects and subscribes.
func (s *Session) connect(ctx context.Context, cli mqtt.Client) (expiry time.Time, err error) {
	expiry = s.cfg.Now().Add(s.cfg.TokenTTL).Truncate(time.Second)
	tok, err := sas.New(ctx, s.cfg.Signer, s.cfg.Identity.resource(), "", expiry)
	if err != nil {
		return time.Time{}, fmt.Errorf("sign token: %w", err)
	}
	s.password.Store(&tok)
	select { // a loss reported for the previous connection is stale
	case <-s.lost:
	default:
	}
	if err := wait(ctx, cli.Connect()); err != nil {
		if errors.Is(err, packets.ErrorRefusedNotAuthorised) {
			return time.Time{}, ErrNotAuthorized
		}
		return time.Time{}, fmt.Errorf("connect to %s: %w", s.cfg.Identity.address(), err)
	}
	if err := s.subscribe(ctx, cli); err != nil {
		cli.Disconnect(0)
		return time.Time{}, err
	}
	s.mu.Lock()
	s.cli = cli
	s.gen++
	close(s.changed)
	s.changed = make(chan struct{})
	s.mu.Unlock()
	s.cfg.Log.Info().Str("host", s.cfg.Identity.Host).Time("token_expiry", expiry).Msg("connected")
	if s.cfg.Connected != nil {
		s.wg.Go(func() { s.cfg.Connected(ctx) })
	}
	return expiry, nil
}

// handle runs h, a message's handler, on the caller's goroutine (paho's
// for the message) unless Run is ending, and has Run wait for it.
func (s *Session) handle(h func()) {
	s.mu.Lock()
	if s.ending {
		s.mu.Unlock()
		return
	}
	s.wg.Add(1)
	s.mu.Unlock()
	defer s.wg.Done()
	h()
}

// serve waits for the connection to end: nil when it is time to renew the
// token, the loss otherwise.
func (s *Session) serve(ctx context.Context, cli mqtt.Client, expiry time.Time) error {
	issued := expiry.Add(-s.cfg.TokenTTL)
	renew := time.Until(issued.Add(time.Duration(float64(s.cfg.TokenTTL) * renewFraction)))
	t := time.NewTimer(renew)
	defer t.Stop()
	var err error
	select {
	case <-ctx.Done():
	case <-t.C:
		s.cfg.Log.Info().Msg("renewing token")
	case err = <-s.lost:
		if err == nil {
			err = errors.New("connection lost")
		}
	}
	s.mu.Lock()
	s.cli = nil
	close(s.changed)
	s.changed = make(chan struct{})
	s.mu.Unlock()
	s.failPending()
	cli.Disconnect(250)
	return err
}

// WaitConnected waits for a connection later than connection number
// after (0: any) and returns its number, for SendOn.
func (s *Session) WaitConnected(ctx context.Context, after uint64) (uint64, error) {
	_, gen, err := s.connection(ctx, after)
	return gen, err
}

// connected returns the client once the session is connected.
func (s *Session) connected(ctx context.Context) (mqtt.Client, error) {
	cli, _, err := s.connection(ctx, 0)
	return cli, err
}

// connection waits for a connection later than number after and returns
// its client and number.
func (s *Session) connection(ctx context.Context, after uint64) (mqtt.Client, uint64, error) {
	for {
		s.mu.Lock()
		cli, gen, changed := s.cli, s.gen, s.changed
		s.mu.Unlock()
		if cli != nil && gen > after {
			return cli, gen, nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return nil, 0, context.Cause(ctx)
		}
	}
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
