package workload

import (
	"bufio"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"go.uber.org/goleak"

	"github.com/edgetpm/edgetpm/internal/emulator/pki"
	"github.com/edgetpm/edgetpm/internal/emulator/workloademu"
	"github.com/edgetpm/edgetpm/internal/sas"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const genID = "637862958472233925"

var moduleKeys = map[string][]byte{
	"filtermodule": []byte("filtermodule identity key, 32 B!"),
	"$edgeHub":     []byte("edgeHub identity key, 32 bytes.."),
}

func hmacSHA256(key, data []byte) []byte {
	m := hmac.New(sha256.New, key)
	m.Write(data)
	return m.Sum(nil)
}

// emulator is a workload emulator serving on a socket of its own.
type emulator struct {
	*workloademu.Server
	uri  string
	path string
	ca   *pki.CA
}

func newEmulator(t *testing.T, cfg workloademu.Config) *emulator {
	t.Helper()
	ca, err := pki.NewCA()
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Key == nil {
		cfg.Key = func(m string) ([]byte, bool) { k, ok := moduleKeys[m]; return k, ok }
	}
	if cfg.CA == nil {
		cfg.CA = ca
	}
	s, err := workloademu.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	// Socket paths are short (108 bytes): t.TempDir() can be too long.
	dir, err := os.MkdirTemp("", "wl")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	path := filepath.Join(dir, "workload.sock")
	return &emulator{Server: s, uri: "unix://" + path, path: path, ca: cfg.CA}
}

// start serves e until the test ends; delay postpones the start.
func (e *emulator) start(t *testing.T, delay time.Duration) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		select {
		case <-time.After(delay):
		case <-ctx.Done():
			done <- nil
			return
		}
		done <- e.Serve(ctx, e.path)
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	if delay > 0 {
		return
	}
	for i := 0; ; i++ {
		if c, err := net.Dial("unix", e.path); err == nil {
			c.Close()
			return
		}
		if i == 500 {
			t.Fatal("emulator did not start")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func newClient(t *testing.T, uri, module string) *Client {
	t.Helper()
	c, err := New(uri, module, genID, "")
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestSign(t *testing.T) {
	e := newEmulator(t, workloademu.Config{})
	e.start(t, 0)
	for module, key := range moduleKeys {
		for _, data := range []string{"", "hello", "myhub.azure-devices.net%2Fdevices%2Fedge1%2Fmodules%2Ffiltermodule\n1767225600"} {
			got, err := newClient(t, e.uri, module).Sign(t.Context(), []byte(data))
			if err != nil {
				t.Fatalf("Sign(%q) as %s: %v", data, module, err)
			}
			if want := hmacSHA256(key, []byte(data)); !hmac.Equal(got, want) {
				t.Errorf("Sign(%q) as %s = %x, want %x", data, module, got, want)
			}
		}
	}
	if n := e.Requests(); n != 6 {
		t.Errorf("emulator saw %d sign requests, want 6 (no retries)", n)
	}
}

// The Client is the SAS signer of the edgeHub session
// (docs/edge-protocol.md#sas-tokens-for-edgehub): a token it signs verifies with the module key.
func TestSASToken(t *testing.T) {
	e := newEmulator(t, workloademu.Config{})
	e.start(t, 0)
	var signer sas.Signer = newClient(t, e.uri, "filtermodule")
	resource := sas.ModuleResource("myhub.azure-devices.net", "edge1", "filtermodule")
	token, err := sas.New(t.Context(), signer, resource, "", time.Now().Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	tok, err := sas.Parse(token)
	if err != nil {
		t.Fatal(err)
	}
	if err := tok.MatchAudience(resource); err != nil {
		t.Error(err)
	}
	if err := tok.Verify(moduleKeys["filtermodule"], time.Now()); err != nil {
		t.Errorf("token signed through the workload API: %v", err)
	}
	if err := tok.Verify(moduleKeys["$edgeHub"], time.Now()); !errors.Is(err, sas.ErrSignature) {
		t.Errorf("Verify with another module's key = %v, want %v", err, sas.ErrSignature)
	}
}

func TestTrustBundle(t *testing.T) {
	e := newEmulator(t, workloademu.Config{})
	e.start(t, 0)
	got, err := newClient(t, e.uri, "filtermodule").TrustBundle(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != string(e.ca.CertPEM()) {
		t.Errorf("TrustBundle() = %q, want the CA %q", got, e.ca.CertPEM())
	}
}

// 4xx answers are final: one request, an *Error with the status.
func TestClientErrorNotRetried(t *testing.T) {
	e := newEmulator(t, workloademu.Config{
		// Every caller belongs to another module: 403.
		ModuleOfPID: func(int32) (string, bool) { return "othermodule", true },
	})
	e.start(t, 0)
	_, err := newClient(t, e.uri, "filtermodule").Sign(t.Context(), []byte("x"))
	var werr *Error
	if !errors.As(err, &werr) || werr.Status != 403 || werr.Message != "forbidden" {
		t.Fatalf("Sign as another module's process = %v, want *Error 403 forbidden", err)
	}
	if n := e.Requests(); n != 1 {
		t.Errorf("emulator saw %d sign requests, want 1", n)
	}
	c, err := New(e.uri, "filtermodule", genID, "2000-01-01")
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.TrustBundle(t.Context())
	if !errors.As(err, &werr) || werr.Status != 400 || werr.Message != `invalid api-version "2000-01-01"` {
		t.Errorf("TrustBundle at an unknown api-version = %v, want *Error 400", err)
	}
}

// 5xx answers are retried a few times, then returned.
func TestServerErrorRetriedAFewTimes(t *testing.T) {
	e := newEmulator(t, workloademu.Config{})
	e.start(t, 0)
	_, err := newClient(t, e.uri, "nobody").Sign(t.Context(), []byte("x"))
	var werr *Error
	if !errors.As(err, &werr) || werr.Status != 500 || !strings.HasPrefix(werr.Message, "failed to get module identity for nobody") {
		t.Fatalf("Sign as an unknown module = %v, want *Error 500", err)
	}
	if n, want := e.Requests(), int64(1+serverErrorRetries); n != want {
		t.Errorf("emulator saw %d sign requests, want %d", n, want)
	}
}

// holdAll takes every slot of the emulator's socket with keep-alive
// connections that each got an answer, so they are surely counted (a
// connection the test closed just before may still hold a slot for a
// moment), and checks that the next connection is closed without a reply.
func holdAll(t *testing.T, path string) []net.Conn {
	t.Helper()
	var held []net.Conn
	for i := 0; len(held) < workloademu.DefaultMaxConcurrent; i++ {
		if i == 200 {
			t.Fatalf("could hold only %d connections", len(held))
		}
		c, err := net.Dial("unix", path)
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(5 * time.Second))
		io.WriteString(c, "GET /trust-bundle?api-version=2019-01-30 HTTP/1.1\r\nHost: x\r\n\r\n")
		rsp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err == nil {
			_, err = io.ReadAll(rsp.Body)
		}
		if err != nil {
			c.Close() // over the cap for now
			time.Sleep(10 * time.Millisecond)
			continue
		}
		c.SetDeadline(time.Time{})
		held = append(held, c)
	}
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	io.WriteString(c, "GET /trust-bundle?api-version=2019-01-30 HTTP/1.1\r\nHost: x\r\n\r\n")
	if b, err := io.ReadAll(c); len(b) != 0 || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("connection over the cap: %q, %v; want it closed without a reply", b, err)
	}
	return held
}

// With all ten slots taken, calls get their connection closed; the client
// retries until slots free up (docs/edge-protocol.md#workload-api).
func TestRetryWhenCapExhausted(t *testing.T) {
	e := newEmulator(t, workloademu.Config{})
	e.start(t, 0)
	held := holdAll(t, e.path)
	const hold = 300 * time.Millisecond
	release := time.AfterFunc(hold, func() {
		for _, c := range held {
			c.Close()
		}
	})
	defer release.Stop()
	c := newClient(t, e.uri, "filtermodule")
	start := time.Now()
	got, err := c.Sign(t.Context(), []byte("hello"))
	if err != nil {
		t.Fatalf("Sign with the cap exhausted for %v: %v", hold, err)
	}
	if !hmac.Equal(got, hmacSHA256(moduleKeys["filtermodule"], []byte("hello"))) {
		t.Errorf("Sign = %x, want the module's HMAC", got)
	}
	if d := time.Since(start); d < hold {
		t.Errorf("Sign returned after %v, before the slots were released at %v", d, hold)
	}
	if _, err := c.TrustBundle(t.Context()); err != nil {
		t.Errorf("TrustBundle after the cap freed: %v", err)
	}
}

// While aziot-edged restarts its socket is missing; the client waits.
func TestRetryUntilSocketExists(t *testing.T) {
	e := newEmulator(t, workloademu.Config{})
	const delay = 300 * time.Millisecond
	e.start(t, delay)
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	start := time.Now()
	got, err := newClient(t, e.uri, "$edgeHub").Sign(ctx, []byte("hello"))
	if err != nil {
		t.Fatalf("Sign before the socket exists: %v", err)
	}
	if !hmac.Equal(got, hmacSHA256(moduleKeys["$edgeHub"], []byte("hello"))) {
		t.Errorf("Sign = %x, want the module's HMAC", got)
	}
	if d := time.Since(start); d < delay {
		t.Errorf("Sign returned after %v, before the socket existed at %v", d, delay)
	}
}

// A socket file nobody listens on (aziot-edged stopped) is retried too.
func TestRetryWhileRefused(t *testing.T) {
	e := newEmulator(t, workloademu.Config{})
	ln, err := net.Listen("unix", e.path)
	if err != nil {
		t.Fatal(err)
	}
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	ln.Close()
	e.start(t, 300*time.Millisecond) // replaces the stale socket
	if _, err := newClient(t, e.uri, "filtermodule").Sign(t.Context(), []byte("x")); err != nil {
		t.Fatalf("Sign while the socket refuses: %v", err)
	}
}

// Cancelling the context ends the retries at once; in a synctest bubble
// the time Sign returns is exact.
func TestCancelStopsRetrying(t *testing.T) {
	dir := t.TempDir()
	synctest.Test(t, func(t *testing.T) {
		c := newClient(t, "unix://"+filepath.Join(dir, "never.sock"), "filtermodule")
		ctx, cancel := context.WithCancel(t.Context())
		const after = 5 * time.Second
		time.AfterFunc(after, cancel)
		start := time.Now()
		_, err := c.Sign(ctx, []byte("x"))
		if !errors.Is(err, context.Canceled) {
			t.Errorf("Sign after cancel = %v, want context.Canceled", err)
		}
		if d := time.Since(start); d != after {
			t.Errorf("Sign returned %v after the start, want exactly %v (the cancel)", d, after)
		}
		if !strings.Contains(err.Error(), "last failure") {
			t.Errorf("error %q does not say what failed before the cancel", err)
		}
	})
}

// A hung attempt times out and is retried.
func TestAttemptTimeout(t *testing.T) {
	var calls atomic.Int32
	hang := make(chan struct{})
	defer close(hang)
	path := fakeServer(t, func(w http.ResponseWriter, r *http.Request) {
		if calls.Add(1) == 1 {
			<-hang
			return
		}
		json.NewEncoder(w).Encode(map[string]string{"digest": base64.StdEncoding.EncodeToString(make([]byte, 32))})
	})
	c := newClient(t, "unix://"+path, "filtermodule")
	c.timeout = 100 * time.Millisecond
	if _, err := c.Sign(t.Context(), []byte("x")); err != nil {
		t.Errorf("Sign with a hung first attempt: %v", err)
	}
}

// fakeServer serves h on a socket until the test ends.
func fakeServer(t *testing.T, h http.HandlerFunc) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "wl")
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "fake.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h}
	done := make(chan struct{})
	go func() { srv.Serve(ln); close(done) }()
	t.Cleanup(func() {
		srv.Close()
		<-done
		os.RemoveAll(dir)
	})
	return path
}

// On the wire: the module id percent-encoded, api-version, and the body
// every SDK sends (docs/edge-protocol.md#workload-api).
func TestWire(t *testing.T) {
	type seen struct {
		uri, ctype string
		body       map[string]string
	}
	got := make(chan seen, 1)
	path := fakeServer(t, func(w http.ResponseWriter, r *http.Request) {
		var s seen
		s.uri, s.ctype = r.RequestURI, r.Header.Get("Content-Type")
		json.NewDecoder(r.Body).Decode(&s.body)
		got <- s
		io.WriteString(w, `{"digest":"`+base64.StdEncoding.EncodeToString(make([]byte, 32))+`"}`)
	})
	c, err := New("unix://"+path, "$edgeHub", "6378/62", "")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Sign(t.Context(), []byte("to sign")); err != nil {
		t.Fatal(err)
	}
	s := <-got
	if want := "/modules/%24edgeHub/genid/6378%2F62/sign?api-version=" + DefaultAPIVersion; s.uri != want {
		t.Errorf("request URI = %q, want %q", s.uri, want)
	}
	if s.ctype != "application/json" {
		t.Errorf("Content-Type = %q, want application/json", s.ctype)
	}
	want := map[string]string{"keyId": "primary", "algo": "HMACSHA256", "data": base64.StdEncoding.EncodeToString([]byte("to sign"))}
	if len(s.body) != len(want) || s.body["keyId"] != want["keyId"] || s.body["algo"] != want["algo"] || s.body["data"] != want["data"] {
		t.Errorf("body = %v, want %v", s.body, want)
	}
}

func TestNew(t *testing.T) {
	for _, tc := range []struct {
		uri, module, gen string
		ok               bool
	}{
		{"unix:///var/run/iotedge/workload.sock", "filtermodule", genID, true},
		{"unix:///var/run/iotedge/workload.sock", "$edgeHub", genID, true},
		{"http://127.0.0.1:15580", "filtermodule", genID, false},
		{"https://workload", "filtermodule", genID, false},
		{"/var/run/iotedge/workload.sock", "filtermodule", genID, false},
		{"unix://var/run/iotedge/workload.sock", "filtermodule", genID, false},
		{"unix:workload.sock", "filtermodule", genID, false},
		{"unix://", "filtermodule", genID, false},
		{"", "filtermodule", genID, false},
		{"unix:///var/run/iotedge/workload.sock", "", genID, false},
		{"unix:///var/run/iotedge/workload.sock", "filtermodule", "", false},
	} {
		_, err := New(tc.uri, tc.module, tc.gen, "")
		if (err == nil) != tc.ok {
			t.Errorf("New(%q, %q, %q) = %v, want ok %v", tc.uri, tc.module, tc.gen, err, tc.ok)
		}
	}
}
