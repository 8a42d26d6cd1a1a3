package pki

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// serve starts an HTTPS server with a certificate for hosts.
func serve(t *testing.T, ca *CA, hosts ...string) *httptest.Server {
	t.Helper()
	cfg, err := ca.ServerTLS(hosts...)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "ok")
	}))
	srv.TLS = cfg
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv
}

// get fetches url from the server's address while verifying the name
// serverName against pool.
func get(srv *httptest.Server, pool *x509.CertPool, serverName string) error {
	c := &http.Client{Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: serverName},
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, network, srv.Listener.Addr().String())
		},
	}}
	defer c.CloseIdleConnections()
	resp, err := c.Get("https://" + net.JoinHostPort(serverName, "1") + "/")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if string(body) != "ok" {
		return io.ErrUnexpectedEOF
	}
	return nil
}

func TestServerTLS(t *testing.T) {
	ca, err := NewCA()
	if err != nil {
		t.Fatal(err)
	}
	srv := serve(t, ca, "localhost", "127.0.0.1", "::1")
	for _, tc := range []struct {
		name string
		pool *x509.CertPool
		ok   bool
	}{
		{"localhost", ca.Pool(), true},
		{"127.0.0.1", ca.Pool(), true},
		{"::1", ca.Pool(), true},
		{"other.example", ca.Pool(), false},
		{"127.0.0.2", ca.Pool(), false},
		{"localhost", x509.NewCertPool(), false},
	} {
		err := get(srv, tc.pool, tc.name)
		if tc.ok && err != nil {
			t.Errorf("GET as %q = %v, want success", tc.name, err)
		}
		if !tc.ok && err == nil {
			t.Errorf("GET as %q succeeded, want a verification failure", tc.name)
		}
	}
	// Another CA's pool does not trust it.
	other, err := NewCA()
	if err != nil {
		t.Fatal(err)
	}
	if err := get(srv, other.Pool(), "localhost"); err == nil {
		t.Error("a client trusting another CA accepted the server")
	}
	// CertPEM is what clients load from disk.
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(ca.CertPEM()) {
		t.Fatal("CertPEM is not a PEM certificate")
	}
	if err := get(srv, pool, "localhost"); err != nil {
		t.Errorf("GET with a pool from CertPEM = %v", err)
	}
}

func TestServerTLSNoHosts(t *testing.T) {
	ca, err := NewCA()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ca.ServerTLS(); err == nil {
		t.Error("ServerTLS() with no hosts succeeded")
	}
}

func TestLoadOrCreateCA(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	ca, err := LoadOrCreateCA(dir)
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]os.FileMode{CertFile: 0o644, KeyFile: 0o600} {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if got := fi.Mode().Perm(); got != want {
			t.Errorf("%s mode = %v, want %v", name, got, want)
		}
	}
	onDisk, err := os.ReadFile(filepath.Join(dir, CertFile))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(onDisk, ca.CertPEM()) {
		t.Error("ca.pem differs from CertPEM")
	}
	again, err := LoadOrCreateCA(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(again.CertPEM(), ca.CertPEM()) {
		t.Error("a second LoadOrCreateCA made a new CA")
	}
	// A leaf from the reloaded CA is trusted through the first one's pool:
	// the key was reloaded too.
	srv := serve(t, again, "localhost")
	if err := get(srv, ca.Pool(), "localhost"); err != nil {
		t.Errorf("leaf from the reloaded CA: %v", err)
	}
}

func TestLoadOrCreateCABroken(t *testing.T) {
	good := t.TempDir()
	if _, err := LoadOrCreateCA(good); err != nil {
		t.Fatal(err)
	}
	other := t.TempDir()
	if _, err := LoadOrCreateCA(other); err != nil {
		t.Fatal(err)
	}
	otherKey, err := os.ReadFile(filepath.Join(other, KeyFile))
	if err != nil {
		t.Fatal(err)
	}
	for name, setup := range map[string]func(dir string) error{
		"only cert": func(dir string) error { return copyFile(good, dir, CertFile) },
		"only key":  func(dir string) error { return copyFile(good, dir, KeyFile) },
		"mismatched key": func(dir string) error {
			if err := copyFile(good, dir, CertFile); err != nil {
				return err
			}
			return os.WriteFile(filepath.Join(dir, KeyFile), otherKey, 0o600)
		},
		"garbage cert": func(dir string) error {
			if err := copyFile(good, dir, KeyFile); err != nil {
				return err
			}
			return os.WriteFile(filepath.Join(dir, CertFile), []byte("not pem"), 0o644)
		},
	} {
		dir := t.TempDir()
		if err := setup(dir); err != nil {
			t.Fatal(err)
		}
		if _, err := LoadOrCreateCA(dir); err == nil {
			t.Errorf("%s: LoadOrCreateCA succeeded, want an error", name)
		} else if strings.Contains(err.Error(), "BEGIN") {
			t.Errorf("%s: error echoes file content: %v", name, err)
		}
	}
}

func copyFile(from, to, name string) error {
	b, err := os.ReadFile(filepath.Join(from, name))
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(to, name), b, 0o600)
}
