// Package hubtest runs the edgeHub emulator for tests the way a module
// reaches edgeHub: MQTT over TLS on loopback, with a certificate for the
// gateway and hub host names from a CA the test trusts, and the service API
// over HTTPS.
package hubtest

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"
	"time"

	"github.com/edgetpm/edgetpm/internal/tlsconfig"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/edgetpm/edgetpm/internal/emulator/hubemu"
	"github.com/edgetpm/edgetpm/internal/emulator/pki"
	"github.com/edgetpm/edgetpm/internal/sas"
)

// APIVersion is the api-version the helpers put in usernames and service
// requests (the Python SDK's, docs/edge-protocol.md#mqtt-to-edgehub).
const APIVersion = "2019-10-01"

// Server is a running emulator.
type Server struct {
	*hubemu.Server
	// Addr is the MQTT endpoint, 127.0.0.1:PORT.
	Addr string
	CA   *pki.CA
	// Pool trusts CA and nothing else.
	Pool *x509.CertPool
	// Service serves the service API over TLS; URL is its base URL.
	Service *httptest.Server
	URL     string
	// HTTP trusts CA and nothing else.
	HTTP *http.Client
	// Now is the emulator's clock (Config.Now, or time.Now).
	Now func() time.Time
}

// Start starts an emulator configured by cfg on 127.0.0.1, with a fresh CA
// whose server certificate names the gateway and hub hosts, localhost and
// 127.0.0.1; it is stopped, and its goroutines joined, when the test ends.
// Unless cfg.UpstreamKeep says otherwise it keeps every upstream message.
func Start(t testing.TB, cfg hubemu.Config) *Server {
	t.Helper()
	if cfg.UpstreamKeep == 0 {
		// Tests count every message that reached upstream.
		cfg.UpstreamKeep = math.MaxInt
	}
	emu, err := hubemu.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := pki.NewCA()
	if err != nil {
		t.Fatal(err)
	}
	tc, err := ca.ServerTLS(emu.GatewayHostName(), emu.HubHostName(), "localhost", "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- emu.Serve(ctx, l, tc) }()

	svc := httptest.NewUnstartedServer(emu.ServiceHandler())
	svc.TLS = tc
	svc.StartTLS()
	t.Cleanup(func() {
		svc.Close()
		cancel()
		if err := <-done; err != nil {
			t.Errorf("hubemu Serve: %v", err)
		}
	})
	now := cfg.Now
	if now == nil {
		now = time.Now
	}
	return &Server{
		Server:  emu,
		Addr:    l.Addr().String(),
		CA:      ca,
		Pool:    ca.Pool(),
		Service: svc,
		URL:     svc.URL,
		HTTP:    tlsconfig.HTTPClient(ca.Pool(), 0),
		Now:     now,
	}
}

// Keys returns a Config.Key over keys named "device/module" (modules) or
// "device" (devices).
func Keys(keys map[string][]byte) func(deviceID, moduleID string) ([]byte, bool) {
	return func(d, m string) ([]byte, bool) {
		name := d
		if m != "" {
			name += "/" + m
		}
		k, ok := keys[name]
		return k, ok
	}
}

// Token returns a SAS token for resource signed with key, expiring at
// expiry.
func Token(t testing.TB, resource string, key []byte, expiry time.Time) string {
	t.Helper()
	tok, err := sas.New(context.Background(), sas.Key(key), resource, "", expiry)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// ModuleToken returns a token for a module (module "" for a device) at the
// hub host, valid for ttl from the emulator's clock.
func (s *Server) ModuleToken(t testing.TB, device, module string, key []byte, ttl time.Duration) string {
	t.Helper()
	res := sas.ModuleResource(s.HubHostName(), device, module)
	if module == "" {
		res = sas.DeviceResource(s.HubHostName(), device)
	}
	return Token(t, res, key, s.Now().Add(ttl))
}

// Username is the CONNECT username the Python SDK sends
// (docs/edge-protocol.md#mqtt-to-edgehub).
func (s *Server) Username(device, module string) string {
	id := device
	if module != "" {
		id += "/" + module
	}
	return s.HubHostName() + "/" + id + "/?api-version=" + APIVersion + "&DeviceClientType=" + url.QueryEscape("hubtest/1.0")
}

// ClientOptions returns paho options that reach the emulator as the
// module would: TLS verifying the gateway host name against CA, client id
// {d}/{m}, the SDK username and token as password, MQTT 3.1.1, no
// automatic reconnection.
func (s *Server) ClientOptions(device, module, token string) *paho.ClientOptions {
	id := device
	if module != "" {
		id += "/" + module
	}
	return paho.NewClientOptions().
		AddBroker("tls://" + s.Addr).
		SetTLSConfig(tlsconfig.Client(s.Pool, s.GatewayHostName())).
		SetClientID(id).
		SetUsername(s.Username(device, module)).
		SetPassword(token).
		SetProtocolVersion(4).
		SetCleanSession(true).
		SetAutoReconnect(false).
		SetConnectRetry(false).
		SetConnectTimeout(10 * time.Second).
		SetKeepAlive(30 * time.Second)
}

// Connect connects a client for the module with a one-hour token, fails
// the test on error, and disconnects it when the test ends. modify, when
// not nil, changes the options first.
func (s *Server) Connect(t testing.TB, device, module string, key []byte, modify func(*paho.ClientOptions)) paho.Client {
	t.Helper()
	opts := s.ClientOptions(device, module, s.ModuleToken(t, device, module, key, time.Hour))
	if modify != nil {
		modify(opts)
	}
	c := paho.NewClient(opts)
	tok := c.Connect()
	if !tok.WaitTimeout(15 * time.Second) {
		t.Fatalf("connect %s/%s: timed out", device, module)
	}
	if err := tok.Error(); err != nil {
		t.Fatalf("connect %s/%s: %v", device, module, err)
	}
	t.Cleanup(func() { c.Disconnect(100) })
	return c
}

// ConnectCode connects with opts and returns the CONNACK return code (0
// accepted), disconnecting again on success; a connection that fails
// before any CONNACK is an error.
func ConnectCode(opts *paho.ClientOptions) (byte, error) {
	c := paho.NewClient(opts)
	tok := c.Connect()
	if !tok.WaitTimeout(15 * time.Second) {
		return 0, errors.New("connect timed out")
	}
	ct, ok := tok.(*paho.ConnectToken)
	if !ok {
		return 0, errors.New("not a connect token")
	}
	rc := ct.ReturnCode()
	if tok.Error() == nil && rc == 0 {
		c.Disconnect(100)
		return 0, nil
	}
	if rc != 0 && rc < 0x80 { // 0xFE, 0xFF: paho's network and protocol errors
		return rc, nil
	}
	if tok.Error() == nil { // paho has no error for codes MQTT 3.1.1 lacks
		return 0, fmt.Errorf("CONNACK return code %#x is none of MQTT 3.1.1's", rc)
	}
	return 0, tok.Error()
}
