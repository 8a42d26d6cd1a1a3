package hubemu

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/rs/zerolog"

	"github.com/edgetpm/edgetpm/internal/sas"
)

// Defaults of Config.
const (
	DefaultHubHostName     = "lab-hub.azure-devices.net"
	DefaultGatewayHostName = "lab-edge"
	// DefaultReauthInterval is edgeHub's ConnectionReauthenticator period
	// (docs/edge-protocol.md#sas-tokens-for-edgehub).
	DefaultReauthInterval = 5 * time.Minute
	// DefaultMessageAckTimeout is edgeHub's MessageAckTimeoutSecs (docs/edge-protocol.md#edgehub-delivery).
	DefaultMessageAckTimeout = 30 * time.Second
	// DefaultMessageTTL is how long undelivered input messages are kept.
	DefaultMessageTTL = 2 * time.Hour
	// DefaultUpstreamKeep is how many of the latest messages routed to
	// $upstream are kept.
	DefaultUpstreamKeep = 10000
)

// Limits of edgeHub (docs/edge-protocol.md#mqtt-to-edgehub, #limits).
const (
	// maxPacket is the decoder limit on a packet's remaining length
	// (MaxInboundMessageSize); larger packets close the connection.
	maxPacket = 256 * 1024
	// maxMessageSize bounds body plus property names and values at routing
	// (Constants.MaxMessageSize); larger messages are dropped but acked.
	maxMessageSize = 256 * 1024
	// connectArrivalTimeout is how long a connection may take to send
	// CONNECT (ConnectArrivalTimeout).
	connectArrivalTimeout = time.Minute
	// maxKeepAlive caps the keep-alive a client asks for; 0 means this cap
	// (MqttAdapter.DeriveKeepAliveTimeout: server timeout 1.5 × keep-alive,
	// at most 10 min). In seconds, as MQTT counts it.
	maxKeepAlive = 400
)

// Errors callers branch on.
var (
	// ErrUnknownIdentity: neither Config.Key nor the module registry of the
	// service API knows the device or module.
	ErrUnknownIdentity = errors.New("unknown identity")
	// ErrNotConnected: the module is not connected or has not subscribed to
	// the topic needed (IoT Hub answers 404).
	ErrNotConnected = errors.New("device or module not connected")
	// ErrMethodTimeout: the module did not answer a method in time (504).
	ErrMethodTimeout = errors.New("method response timed out")
	// ErrInvalidTwin: a twin patch breaks the twin rules (400).
	ErrInvalidTwin = errors.New("invalid twin patch")
	// ErrInvalidArgument: a method name, input name, payload or service
	// request body is unusable (400).
	ErrInvalidArgument = errors.New("invalid argument")
	// ErrStopped: the server has stopped serving.
	ErrStopped = errors.New("server stopped")
)

// Config configures a Server. Only Key is required.
type Config struct {
	// HubHostName is the IoT hub; empty means DefaultHubHostName.
	HubHostName string
	// GatewayHostName is the edge device's hostname; empty means
	// DefaultGatewayHostName. Tokens may name either host as audience
	// (docs/edge-protocol.md#sas-tokens-for-edgehub), and both belong in the TLS certificate.
	GatewayHostName string
	// Key returns the primary key of a module identity (moduleID != "") or
	// a device identity (moduleID == ""); ok false means unknown identity.
	// It is called at every CONNECT and re-authentication, so a removed
	// identity loses its connection at the next re-authentication. A module
	// created through the service API's module registry is authenticated
	// with its registry keys instead, and one deleted there is unknown even
	// if Key knows it. A module's token may also be signed with its
	// device's key, as edgeHub takes it.
	Key func(deviceID, moduleID string) (key []byte, ok bool)
	// Routes maps a route name to an edgeHub route (docs/edge-protocol.md#deployments):
	// "FROM <source> INTO <sink>", sources /messages/*,
	// /messages/modules/{m}/*, /messages/modules/{m}/outputs/* and
	// /messages/modules/{m}/outputs/{o}; sinks $upstream and
	// BrokeredEndpoint("/modules/{m}/inputs/{i}"). WHERE clauses are not
	// supported. Messages no route matches are dropped but acknowledged.
	Routes map[string]string
	// ReauthInterval is how often connections are re-authenticated; zero
	// means DefaultReauthInterval.
	ReauthInterval time.Duration
	// MessageAckTimeout is how long a delivery to a module input waits for
	// the PUBACK; zero means DefaultMessageAckTimeout.
	MessageAckTimeout time.Duration
	// MessageTTL is how long a message for a module input is kept while it
	// cannot be delivered; zero means DefaultMessageTTL.
	MessageTTL time.Duration
	// UpstreamKeep is how many of the latest messages routed to $upstream
	// are kept for Upstream and GET /messages/upstream, older ones being
	// dropped; zero means DefaultUpstreamKeep.
	UpstreamKeep int
	// Now is the clock tokens and message TTLs are checked against; nil
	// means time.Now. Timers (fault windows, acknowledgement timeouts,
	// backoff) use real time.
	Now func() time.Time
	// Log receives connection and routing events; the zero value logs
	// nothing. Tokens and keys are never logged.
	Log zerolog.Logger
	// ServicePolicies maps a shared access policy name (skn) to its key.
	// When it is not empty, every service API request needs a service SAS
	// token for the hub host signed with one of these keys
	// (docs/edge-protocol.md#iot-hub-service-api); when empty the service API is open.
	ServicePolicies map[string][]byte
	// Devices lists the edge devices automatic deployments consider (the
	// lab's registry, a test's fleet); nil means none. It is called at
	// every reconciliation, so a device added later is considered at the
	// next configuration or tag change. The device twins of these devices,
	// and the twins of their $edgeAgent, $edgeHub and of the modules that
	// deployments name, exist even when Key does not know them.
	Devices func() []string
	// Agent, when set, stands in for the edgeAgent of every device: after
	// a device's $edgeAgent desired properties change, it is called with
	// them (with "$version") and the code it returns is reported on the
	// $edgeAgent module twin as lastDesiredVersion and lastDesiredStatus,
	// as edgeAgent reports them. It is called before the request that
	// changed them is answered, one call at a time and with no other lock
	// held, so it may read twins and configurations and change tags; a
	// version that is no longer the twin's by the time its turn comes is
	// skipped. A change it makes to an $edgeAgent's desired properties,
	// directly or through a deployment, would wait for Agent itself.
	Agent func(device string, edgeAgentDesired json.RawMessage) (code int)
}

// Server is the emulator. Create it with New and run it with Serve.
type Server struct {
	hub, gateway string
	cfgKey       func(deviceID, moduleID string) ([]byte, bool)   // Config.Key
	keys         func(deviceID, moduleID string) ([][]byte, bool) // identityKeys: the registry, then Config.Key
	routes       []route
	reauth       time.Duration
	ackTimeout   time.Duration
	ttl          time.Duration
	clock        func() time.Time
	log          zerolog.Logger
	policies     map[string][]byte
	devices      func() []string
	agent        func(string, json.RawMessage) int

	serving atomic.Bool
	broker  *mqtt.Server
	addr    atomic.Pointer[net.Addr]

	mu       sync.Mutex
	stopping chan struct{}          // closed when Serve's context ends
	stopped  bool                   // under mu: no new workers
	wg       sync.WaitGroup         // workers and the re-authentication loop
	conns    map[identity]*conn     // the registered connection of each identity
	byClient map[*mqtt.Client]*conn // every authenticated connection
	inboxes  map[identity]*inbox
	upstream []Message // the last upKeep messages routed to $upstream
	upBase   int       // the index of upstream[0] among all ever routed
	upKeep   int
	upWake   chan struct{} // closed and replaced on each upstream message
	methods  map[string]chan methodResult

	twinMu sync.Mutex // serializes twin changes and the pushes they cause
	twins  map[identity]*twinState

	// deployMu serializes configuration and tag changes with the
	// reconciliation they cause; it is taken before twinMu.
	deployMu sync.Mutex
	configs  map[string]*configuration
	etagSeq  uint64 // under deployMu: the last ETag number given out
	created  uint64 // under deployMu: the last creation number

	// agentMu serializes Config.Agent calls and their reports; it is taken
	// with no other lock held, and before twinMu.
	agentMu sync.Mutex

	// regMu guards the module registry of the service API. It is a leaf:
	// no other lock is taken while it is held, so identityKeys may be
	// called under any lock. identityKeys calls Config.Key and, for
	// $edgeAgent and $edgeHub, Config.Devices (systemModules) outside it:
	// in the lab both read the registry file, on every CONNECT and
	// re-authentication of those modules.
	regMu   sync.Mutex
	modules map[identity]*moduleIdentity // created through the registry
	removed map[identity]bool            // deleted through it, not created again
	regSeq  uint64                       // the last registry ETag number

	ridSeq     atomic.Uint64
	stallUntil atomic.Int64 // UnixNano; PUBACKs held until then
	refuseTill atomic.Int64 // UnixNano; CONNACK 3 until then
	loseTwin   atomic.Int64 // twin answers still to lose (LoseTwinAnswers)
}

// New returns an emulator configured by cfg.
func New(cfg Config) (*Server, error) {
	s := &Server{
		hub:        cfg.HubHostName,
		gateway:    cfg.GatewayHostName,
		cfgKey:     cfg.Key,
		reauth:     cfg.ReauthInterval,
		ackTimeout: cfg.MessageAckTimeout,
		ttl:        cfg.MessageTTL,
		upKeep:     cfg.UpstreamKeep,
		clock:      cfg.Now,
		log:        cfg.Log,
		policies:   maps.Clone(cfg.ServicePolicies),
		devices:    cfg.Devices,
		agent:      cfg.Agent,
		configs:    map[string]*configuration{},
		stopping:   make(chan struct{}),
		conns:      map[identity]*conn{},
		byClient:   map[*mqtt.Client]*conn{},
		inboxes:    map[identity]*inbox{},
		upWake:     make(chan struct{}),
		methods:    map[string]chan methodResult{},
		twins:      map[identity]*twinState{},
		modules:    map[identity]*moduleIdentity{},
		removed:    map[identity]bool{},
	}
	if s.cfgKey == nil {
		return nil, errors.New("hubemu: Config.Key is required")
	}
	s.keys = s.identityKeys
	if s.hub == "" {
		s.hub = DefaultHubHostName
	}
	if s.gateway == "" {
		s.gateway = DefaultGatewayHostName
	}
	// The hub's name goes into its service connection string, which
	// sas.ParsePolicy reads back only with a DNS name in it.
	if !sas.ValidDNSName(s.hub) {
		return nil, fmt.Errorf("hubemu: hub %q is not a DNS name", s.hub)
	}
	if strings.ContainsAny(s.gateway, "/:@ \t\r\n?#%") {
		return nil, fmt.Errorf("hubemu: gateway %q is not a host name", s.gateway)
	}
	if s.reauth <= 0 {
		s.reauth = DefaultReauthInterval
	}
	if s.ackTimeout <= 0 {
		s.ackTimeout = DefaultMessageAckTimeout
	}
	if s.ttl <= 0 {
		s.ttl = DefaultMessageTTL
	}
	if s.upKeep <= 0 {
		s.upKeep = DefaultUpstreamKeep
	}
	if s.clock == nil {
		s.clock = time.Now
	}
	for name, text := range cfg.Routes {
		r, err := parseRoute(name, text)
		if err != nil {
			return nil, fmt.Errorf("hubemu: %w", err)
		}
		s.routes = append(s.routes, r)
	}
	slices.SortFunc(s.routes, func(a, b route) int { return strings.Compare(a.name, b.name) })
	return s, nil
}

// HubHostName returns the IoT hub host name tokens may name.
func (s *Server) HubHostName() string { return s.hub }

// GatewayHostName returns the edge device host name tokens may name.
func (s *Server) GatewayHostName() string { return s.gateway }

// Addr returns the address Serve listens on, nil before Serve.
func (s *Server) Addr() net.Addr {
	if a := s.addr.Load(); a != nil {
		return *a
	}
	return nil
}

// Serve accepts MQTT connections over TLS on l until ctx ends, then closes
// every connection and returns nil once all its goroutines have ended. It
// always closes l. It may be called once.
func (s *Server) Serve(ctx context.Context, l net.Listener, tlsConfig *tls.Config) error {
	if tlsConfig == nil {
		l.Close()
		return errors.New("hubemu: serve: TLS configuration required (edgeHub serves MQTT over TLS only)")
	}
	if !s.serving.CompareAndSwap(false, true) {
		l.Close()
		return errors.New("hubemu: serve: already serving")
	}
	tc := tlsConfig.Clone()
	// edgeHub SslProtocols default tls1.2,tls1.3 (docs/edge-protocol.md#mqtt-to-edgehub).
	tc.MinVersion = max(tc.MinVersion, tls.VersionTLS12)
	addr := l.Addr()
	s.addr.Store(&addr)

	caps := mqtt.NewDefaultServerCapabilities()
	caps.MaximumPacketSize = maxPacket + 1 // mochi compares remaining length + 1
	caps.MaximumClientWritesPending = 64
	s.broker = mqtt.New(&mqtt.Options{
		Capabilities:           caps,
		Logger:                 slog.New(slog.NewTextHandler(logWriter{s.log}, &slog.HandlerOptions{Level: slog.LevelWarn})),
		SysTopicResendInterval: 3600,
	})
	if err := s.broker.AddHook(&hook{s: s}, nil); err != nil {
		l.Close()
		return fmt.Errorf("hubemu: add hook: %w", err)
	}
	ln := &listener{id: "edgehub", l: tls.NewListener(l, tc), raw: l, conns: map[net.Conn]struct{}{}, served: make(chan struct{}), onEnd: s.connEnded}
	if err := s.broker.AddListener(ln); err != nil {
		l.Close()
		return fmt.Errorf("hubemu: add listener: %w", err)
	}

	s.mu.Lock()
	for _, b := range s.inboxes {
		s.startInboxLocked(b)
	}
	s.wg.Add(1)
	s.mu.Unlock()
	go func() {
		defer s.wg.Done()
		s.reauthLoop()
	}()

	if err := s.broker.Serve(); err != nil {
		// Not reached with this configuration (no stores, no listeners
		// from config); the listener was never served.
		close(ln.served)
		s.shutdown(ln)
		return fmt.Errorf("hubemu: serve: %w", err)
	}
	s.log.Info().Str("addr", addr.String()).Msg("serving mqtt")
	<-ctx.Done()
	s.shutdown(ln)
	return nil
}

func (s *Server) shutdown(ln *listener) {
	s.mu.Lock()
	if !s.stopped {
		s.stopped = true
		close(s.stopping)
	}
	conns := make([]*conn, 0, len(s.byClient))
	for _, c := range s.byClient {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	for _, c := range conns {
		c.close("server stopping")
	}
	ln.shut()
	// Join every connection's goroutine before Close: a client still being
	// established reads broker state that Close tears down.
	ln.wait()
	// Close stops mochi's event loop; all clients are already closed, so it
	// writes no DISCONNECT (3.1.1 has none from a server).
	_ = s.broker.Close()
	s.wg.Wait()
	s.log.Info().Msg("stopped")
}

// now is the configured clock.
func (s *Server) now() time.Time { return s.clock() }

// spawnLocked starts f in a goroutine joined by Serve; it does nothing once
// stopping. s.mu must be held.
func (s *Server) spawnLocked(f func()) {
	if s.stopped || !s.serving.Load() {
		return
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		f()
	}()
}

// listener is a mochi listener over a TLS listener that owns every
// connection it accepts: it bounds the wait for CONNECT, closes them all on
// shutdown, and joins the goroutines mochi runs for them (mochi's own
// wait group is incremented inside those goroutines, too late to join on).
type listener struct {
	id     string
	l      net.Listener // TLS
	raw    net.Listener
	log    *slog.Logger
	onEnd  func(net.Conn)
	served chan struct{}

	mu     sync.Mutex
	closed bool
	conns  map[net.Conn]struct{}
	wg     sync.WaitGroup
	once   sync.Once
}

func (l *listener) Init(log *slog.Logger) error { l.log = log; return nil }
func (l *listener) ID() string                  { return l.id }
func (l *listener) Address() string             { return l.raw.Addr().String() }
func (l *listener) Protocol() string            { return "tls" }

// Close is called by mochi's Close; shut has done the work already.
func (l *listener) Close(listeners.CloseFn) { l.shut() }

func (l *listener) Serve(establish listeners.EstablishFn) {
	defer close(l.served)
	for {
		c, err := l.l.Accept()
		if err != nil {
			return
		}
		l.mu.Lock()
		if l.closed {
			l.mu.Unlock()
			c.Close()
			return
		}
		l.conns[c] = struct{}{}
		l.wg.Add(1)
		l.mu.Unlock()
		_ = c.SetDeadline(time.Now().Add(connectArrivalTimeout))
		go func() {
			defer l.wg.Done()
			_ = establish(l.id, c)
			c.Close()
			l.onEnd(c)
			l.mu.Lock()
			delete(l.conns, c)
			l.mu.Unlock()
		}()
	}
}

// shut stops accepting and closes every connection.
func (l *listener) shut() {
	l.once.Do(func() {
		l.mu.Lock()
		l.closed = true
		for c := range l.conns {
			c.Close()
		}
		l.mu.Unlock()
		l.l.Close()
	})
}

// wait joins the accept loop and the connections' goroutines.
func (l *listener) wait() {
	<-l.served
	l.wg.Wait()
}

// logWriter hands mochi's log lines to zerolog at debug level.
type logWriter struct{ log zerolog.Logger }

func (w logWriter) Write(p []byte) (int, error) {
	w.log.Debug().Str("component", "mochi").Msg(strings.TrimSpace(string(p)))
	return len(p), nil
}
