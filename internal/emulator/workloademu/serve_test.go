package workloademu

import (
	"bufio"
	"context"
	"errors"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// serve runs s on a fresh socket until the test ends, and checks that
// Serve then returns nil and removes the socket.
func serve(t *testing.T, s *Server) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "workload.sock")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, path) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve = %v, want nil after the context ended", err)
		}
		if _, err := os.Lstat(path); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("socket %s still there after Serve returned: %v", path, err)
		}
	})
	for deadline := time.Now().Add(5 * time.Second); ; {
		if c, err := net.Dial("unix", path); err == nil {
			c.Close()
			return path
		}
		if time.Now().After(deadline) {
			t.Fatalf("Serve did not listen on %s", path)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// client talks HTTP over the socket, one connection per request so that
// it never holds a slot of the cap.
func client(path string) *http.Client {
	return &http.Client{Transport: &http.Transport{
		DisableKeepAlives: true,
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", path)
		},
	}}
}

func post(t *testing.T, hc *http.Client, path, body string) (int, string) {
	t.Helper()
	rsp, err := hc.Post("http://workload"+path, "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatalf("POST %s: %v", path, err)
	}
	defer rsp.Body.Close()
	b, err := io.ReadAll(rsp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return rsp.StatusCode, string(b)
}

func TestServe(t *testing.T) {
	path := serve(t, newServer(t, Config{}))
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Type() != fs.ModeSocket || fi.Mode().Perm() != 0o666 {
		t.Errorf("socket mode = %v, want a socket with 0666", fi.Mode())
	}
	status, body := post(t, client(path), "/modules/%24edgeHub/genid/1/sign"+v, signBody)
	if want := `{"digest":"` + digest(hubKey, "hello") + `"}`; status != 200 || body != want {
		t.Errorf("sign over the socket = %d %s, want 200 %s", status, body, want)
	}
}

func TestServeStaleSocket(t *testing.T) {
	dir := t.TempDir()
	stale := filepath.Join(dir, "stale.sock")
	ln, err := net.Listen("unix", stale)
	if err != nil {
		t.Fatal(err)
	}
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	ln.Close()
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- newServer(t, Config{}).Serve(ctx, stale) }()
	for i := 0; ; i++ {
		c, err := net.Dial("unix", stale)
		if err == nil {
			c.Close()
			break
		}
		if i == 500 {
			t.Fatal("Serve did not replace the stale socket")
		}
		time.Sleep(10 * time.Millisecond)
	}
	// A live socket is not taken over.
	if err := newServer(t, Config{}).Serve(t.Context(), stale); err == nil || !strings.Contains(err.Error(), "in use") {
		t.Errorf("Serve on a live socket = %v, want an in-use error", err)
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Serve = %v", err)
	}
	// A file that is not a socket is not removed.
	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := newServer(t, Config{}).Serve(t.Context(), file); err == nil {
		t.Error("Serve over a regular file succeeded")
	}
	if b, err := os.ReadFile(file); err != nil || string(b) != "x" {
		t.Errorf("regular file changed: %q, %v", b, err)
	}
}

// requestRaw writes a sign request on c and returns everything the server
// sends back before it closes.
func requestRaw(c net.Conn) (string, error) {
	c.SetDeadline(time.Now().Add(5 * time.Second))
	io.WriteString(c, "POST /modules/filtermodule/genid/1/sign"+v+" HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: "+
		strconv.Itoa(len(signBody))+"\r\n\r\n"+signBody)
	b, err := io.ReadAll(c)
	return string(b), err
}

// holdSlot opens a keep-alive connection that got an answer, so it
// surely holds a slot; nil when it was over the cap (a connection closed
// just before may hold its slot a moment longer).
func holdSlot(t *testing.T, path string) net.Conn {
	t.Helper()
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(5 * time.Second))
	io.WriteString(c, "GET /trust-bundle"+v+" HTTP/1.1\r\nHost: x\r\n\r\n")
	rsp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err == nil {
		_, err = io.ReadAll(rsp.Body)
	}
	if err != nil {
		c.Close()
		return nil
	}
	c.SetDeadline(time.Time{})
	return c
}

// Ten live connections fill the socket; the eleventh is closed without a
// byte of HTTP (docs/edge-protocol.md#workload-api), and a freed slot serves again.
func TestConcurrencyCap(t *testing.T) {
	path := serve(t, newServer(t, Config{CA: newCA(t)}))
	var held []net.Conn
	defer func() {
		for _, c := range held {
			c.Close()
		}
	}()
	for i := 0; len(held) < DefaultMaxConcurrent; i++ {
		if i == 200 {
			t.Fatalf("could hold only %d connections", len(held))
		}
		if c := holdSlot(t, path); c != nil {
			held = append(held, c)
		} else {
			time.Sleep(10 * time.Millisecond)
		}
	}
	extra, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	got, err := requestRaw(extra)
	extra.Close()
	if got != "" {
		t.Errorf("connection over the cap got a reply: %q", got)
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Errorf("connection over the cap was left open: %v", err)
	}

	// The held connections are still served.
	first, err := requestRaw(held[0])
	if !strings.HasPrefix(first, "HTTP/1.1 200 ") {
		t.Errorf("held connection: %q, %v; want a 200", first, err)
	}
	held[0].Close()
	// Its slot frees once the server has seen it close.
	for i := 0; ; i++ {
		c, err := net.Dial("unix", path)
		if err != nil {
			t.Fatal(err)
		}
		got, _ := requestRaw(c)
		c.Close()
		if strings.HasPrefix(got, "HTTP/1.1 200 ") {
			break
		}
		if i == 200 {
			t.Fatalf("no slot freed after a connection closed; last answer %q", got)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// A smaller cap is honoured too.
func TestConcurrencyCapConfigured(t *testing.T) {
	path := serve(t, newServer(t, Config{MaxConcurrent: 1}))
	var c net.Conn
	for i := 0; c == nil; i++ {
		if i == 200 {
			t.Fatal("could not hold the only slot")
		}
		c = holdSlot(t, path)
	}
	defer c.Close()
	if extra := holdSlot(t, path); extra != nil {
		extra.Close()
		t.Error("a second connection was served with MaxConcurrent 1")
	}
}

// Callers are identified by SO_PEERCRED: this test's own pid.
func TestPeerPID(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("SO_PEERCRED is read on Linux only")
	}
	self := int32(os.Getpid())
	var mu sync.Mutex // ModuleOfPID runs on the server's goroutines
	var seen []int32
	s := newServer(t, Config{CA: newCA(t), ModuleOfPID: func(pid int32) (string, bool) {
		mu.Lock()
		defer mu.Unlock()
		seen = append(seen, pid)
		return "filtermodule", pid == self
	}})
	hc := client(serve(t, s))
	for _, tc := range []struct {
		path, body string
		status     int
		want       string
	}{
		{signPath + v, signBody, 200, `{"digest":"` + digest(filterKey, "hello") + `"}`},
		{"/modules/%24edgeHub/genid/1/sign" + v, signBody, 403, msg("forbidden")},
		{"/modules/%24edgeHub/genid/1/certificate/server" + v, `{"commonName":"x"}`, 403, msg("forbidden")},
		{"/modules/%24edgeHub/certificate/identity" + v, ``, 403, msg("forbidden")},
		// The pid check comes before the body checks.
		{"/modules/%24edgeHub/genid/1/sign" + v, ``, 403, msg("forbidden")},
		// ... but after the JSON is parsed, in http-common.
		{"/modules/%24edgeHub/genid/1/sign" + v, `{`, 422, msg("expected value")},
	} {
		if status, body := post(t, hc, tc.path, tc.body); status != tc.status || body != tc.want {
			t.Errorf("POST %s %q = %d %s, want %d %s", tc.path, tc.body, status, body, tc.status, tc.want)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	for _, pid := range seen {
		if pid != self {
			t.Errorf("ModuleOfPID got pid %d, want this process's %d", pid, self)
		}
	}
	if len(seen) == 0 {
		t.Error("ModuleOfPID was never called")
	}

	// A pid of no module is refused on its own module's route too.
	s2 := newServer(t, Config{ModuleOfPID: func(int32) (string, bool) { return "", false }})
	if status, body := post(t, client(serve(t, s2)), signPath+v, signBody); status != 403 || body != msg("forbidden") {
		t.Errorf("sign from an unknown pid = %d %s, want 403 forbidden", status, body)
	}
}

// A body that does not arrive in time gets 408, like http-common's 5 s
// HYPER_REQUEST_TIMEOUT (shortened here).
func TestBodyTimeout(t *testing.T) {
	s := newServer(t, Config{})
	s.bodyTimeout = 100 * time.Millisecond
	c, err := net.Dial("unix", serve(t, s))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	io.WriteString(c, "POST "+signPath+v+" HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"data\":")
	rsp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer rsp.Body.Close()
	b, _ := io.ReadAll(rsp.Body)
	if rsp.StatusCode != 408 || string(b) != msg("deadline has elapsed") {
		t.Errorf("slow body = %d %s, want 408 %s", rsp.StatusCode, b, msg("deadline has elapsed"))
	}
}
