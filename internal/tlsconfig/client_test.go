package tlsconfig_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/edgetpm/edgetpm/internal/emulator/pki"
	"github.com/edgetpm/edgetpm/internal/tlsconfig"
)

// serve accepts TLS connections with cfg until the test ends, completing
// each handshake.
func serve(t *testing.T, cfg *tls.Config) string {
	t.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(10 * time.Second))
				c.(*tls.Conn).Handshake()
				io.Copy(io.Discard, c)
			}()
		}
	}()
	return ln.Addr().String()
}

func handshake(ctx context.Context, addr string, cfg *tls.Config) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	c, err := (&tls.Dialer{Config: cfg}).DialContext(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	return c.Close()
}

// The server's chain is checked against the roots, its name against the
// server name (not the address dialled), and nothing older than TLS 1.2
// is spoken.
func TestClient(t *testing.T) {
	ca, err := pki.NewCA()
	if err != nil {
		t.Fatal(err)
	}
	srv, err := ca.ServerTLS("gateway.lab")
	if err != nil {
		t.Fatal(err)
	}
	modern := serve(t, srv)
	old := srv.Clone()
	old.MinVersion, old.MaxVersion = tls.VersionTLS10, tls.VersionTLS11
	legacy := serve(t, old)

	permissive := tlsconfig.Client(ca.Pool(), "gateway.lab")
	permissive.MinVersion = tls.VersionTLS10 // the control: the legacy server does answer
	for _, tt := range []struct {
		name string
		addr string
		cfg  *tls.Config
		want string // in the error; "" is success
	}{
		{"trusted", modern, tlsconfig.Client(ca.Pool(), "gateway.lab"), ""},
		{"other name", modern, tlsconfig.Client(ca.Pool(), "other.lab"), "other.lab"},
		{"dialled address", modern, tlsconfig.Client(ca.Pool(), ""), "127.0.0.1"},
		{"system roots", modern, tlsconfig.Client(nil, "gateway.lab"), "unknown authority"},
		{"TLS 1.1 server", legacy, tlsconfig.Client(ca.Pool(), "gateway.lab"), "protocol version"},
		{"TLS 1.1 server, control", legacy, permissive, ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			err := handshake(t.Context(), tt.addr, tt.cfg)
			switch {
			case tt.want == "" && err != nil:
				t.Errorf("handshake = %v, want success", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Errorf("handshake = %v, want an error with %q", err, tt.want)
			}
		})
	}
}

func TestClientSettings(t *testing.T) {
	pool := x509.NewCertPool()
	c := tlsconfig.Client(pool, "hub.example")
	if c.MinVersion != tls.VersionTLS12 || c.RootCAs != pool || c.ServerName != "hub.example" || c.InsecureSkipVerify {
		t.Errorf("Client = MinVersion %x, RootCAs %p, ServerName %q, InsecureSkipVerify %v; want TLS 1.2, %p, hub.example, false",
			c.MinVersion, c.RootCAs, c.ServerName, c.InsecureSkipVerify, pool)
	}
	if a, b := tlsconfig.Client(pool, ""), tlsconfig.Client(pool, ""); a == b {
		t.Error("Client returns one configuration twice; callers may change theirs")
	}
}

// HTTPClient verifies like Client, takes the proxy from the environment
// and bounds every request.
func TestHTTPClient(t *testing.T) {
	ca, err := pki.NewCA()
	if err != nil {
		t.Fatal(err)
	}
	stall := make(chan struct{})
	t.Cleanup(func() { close(stall) })
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			select {
			case <-stall:
			case <-r.Context().Done():
			}
		}
	}))
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // the untrusted handshake
	if srv.TLS, err = ca.ServerTLS("127.0.0.1"); err != nil {
		t.Fatal(err)
	}
	srv.StartTLS()
	t.Cleanup(srv.Close)

	hc := tlsconfig.HTTPClient(ca.Pool(), 200*time.Millisecond)
	tr := hc.Transport.(*http.Transport)
	if tr.Proxy == nil || tr.TLSClientConfig.MinVersion != tls.VersionTLS12 || hc.Timeout != 200*time.Millisecond {
		t.Errorf("HTTPClient: proxy set %v, MinVersion %x, Timeout %v; want true, TLS 1.2, 200ms", tr.Proxy != nil, tr.TLSClientConfig.MinVersion, hc.Timeout)
	}
	for _, tt := range []struct {
		name string
		hc   *http.Client
		path string
		ok   bool
		// check tells the failure apart, when !ok
		check func(error) bool
	}{
		{"trusted", hc, "/", true, nil},
		{"system roots", tlsconfig.HTTPClient(nil, time.Minute), "/", false, func(err error) bool {
			var u x509.UnknownAuthorityError
			return errors.As(err, &u)
		}},
		{"timeout", hc, "/slow", false, func(err error) bool {
			var ne net.Error
			return errors.As(err, &ne) && ne.Timeout()
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			resp, err := tt.hc.Get(srv.URL + tt.path)
			if err == nil {
				resp.Body.Close()
			}
			switch {
			case tt.ok && err != nil:
				t.Errorf("GET %s = %v, want 200", tt.path, err)
			case !tt.ok && (err == nil || !tt.check(err)):
				t.Errorf("GET %s = %v, want the %s error", tt.path, err, tt.name)
			}
		})
	}
}
