package source

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"maps"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/rs/zerolog"

	"github.com/edgetpm/edgetpm/internal/backoff"
	"github.com/edgetpm/edgetpm/internal/pki"
	"github.com/edgetpm/edgetpm/internal/syncbuf"
	"github.com/edgetpm/edgetpm/internal/tpmtest"
	"github.com/edgetpm/edgetpm/module/queue"
)

// broker is a Mosquitto of one test, on loopback, with its own
// configuration and no persistence.
type broker struct {
	Port int
	URL  string
	// CAFile is the CA of a TLS listener.
	CAFile string

	t      testing.TB
	users  map[string]string
	bin    string
	dir    string
	extra  string // configuration lines
	tls    bool
	cmd    *exec.Cmd
	exited chan error
	out    *syncBuffer
}

type brokerOptions struct {
	// users are name → password in a password_file; none means anonymous.
	users map[string]string
	tls   bool
	extra []string // more configuration lines
}

func startBroker(t testing.TB, o brokerOptions) *broker {
	t.Helper()
	b := &broker{t: t, users: o.users, bin: tpmtest.Need(t, "mosquitto"), dir: t.TempDir(), tls: o.tls, out: &syncBuffer{}}
	lines := []string{"allow_anonymous true"}
	if len(o.users) > 0 {
		pw := filepath.Join(b.dir, "passwords")
		for u, p := range o.users {
			args := []string{"-b", pw, u, p}
			if _, err := os.Stat(pw); err != nil {
				args = append([]string{"-c"}, args...)
			}
			if out, err := exec.Command(tpmtest.Need(t, "mosquitto_passwd"), args...).CombinedOutput(); err != nil {
				t.Fatalf("mosquitto_passwd: %v\n%s", err, out)
			}
		}
		lines = []string{"allow_anonymous false", "password_file " + pw}
	}
	if o.tls {
		lines = append(lines, b.writeTLS(t)...)
	}
	b.extra = strings.Join(append(lines, o.extra...), "\n")
	if err := b.start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		b.stop()
		if t.Failed() {
			t.Logf("mosquitto log:\n%s", b.out.String())
		}
	})
	return b
}

// writeTLS makes a CA and a server certificate for 127.0.0.1.
func (b *broker) writeTLS(t testing.TB) []string {
	ca, err := pki.NewCA()
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := ca.ServerTLS("127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	key, err := x509.MarshalPKCS8PrivateKey(cfg.Certificates[0].PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	var chain []byte
	for _, der := range cfg.Certificates[0].Certificate {
		chain = append(chain, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})...)
	}
	files := map[string][]byte{
		"ca.pem":     ca.CertPEM(),
		"server.pem": chain,
		"server.key": pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: key}),
	}
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(b.dir, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	b.CAFile = filepath.Join(b.dir, "ca.pem")
	return []string{
		"cafile " + b.CAFile,
		"certfile " + filepath.Join(b.dir, "server.pem"),
		"keyfile " + filepath.Join(b.dir, "server.key"),
	}
}

// start starts Mosquitto on b.Port, or on a free port when it is 0,
// trying another if that one is taken in the meantime (Mosquitto cannot
// pick one itself).
func (b *broker) start() error {
	fixed := b.Port != 0
	var lastErr error
	for attempt := 0; attempt < 10; attempt++ {
		if !fixed {
			p, err := freePort()
			if err != nil {
				return err
			}
			b.Port = p
		}
		conf := filepath.Join(b.dir, "mosquitto.conf")
		text := fmt.Sprintf("user root\npersistence false\nlog_dest stderr\nlog_type error\nlog_type warning\nlistener %d 127.0.0.1\n%s\n", b.Port, b.extra)
		if err := os.WriteFile(conf, []byte(text), 0o600); err != nil {
			return err
		}
		cmd := exec.Command(b.bin, "-c", conf)
		cmd.Stdout, cmd.Stderr = b.out, b.out
		if err := cmd.Start(); err != nil {
			return fmt.Errorf("start mosquitto: %w", err)
		}
		exited := make(chan error, 1)
		go func() { exited <- cmd.Wait() }()
		if err := waitListening(b.Port, exited); err != nil {
			_ = cmd.Process.Kill()
			<-exited
			lastErr = err
			time.Sleep(50 * time.Millisecond)
			continue // the port was taken in the meantime
		}
		b.cmd, b.exited = cmd, exited
		scheme := "tcp"
		if b.tls {
			scheme = "mqtts"
		}
		b.URL = fmt.Sprintf("%s://127.0.0.1:%d", scheme, b.Port)
		return nil
	}
	return fmt.Errorf("mosquitto did not come up: %w\n%s", lastErr, b.out.String())
}

// stop kills Mosquitto, like a crash: its sessions are gone.
func (b *broker) stop() {
	if b.cmd == nil {
		return
	}
	_ = b.cmd.Process.Kill()
	<-b.exited
	b.cmd = nil
}

// restart stops Mosquitto and starts it again on the same port.
func (b *broker) restart() {
	b.t.Helper()
	b.stop()
	if err := b.start(); err != nil {
		b.t.Fatal(err)
	}
}

func waitListening(port int, exited <-chan error) error {
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case err := <-exited:
			return fmt.Errorf("mosquitto exited: %v", err)
		default:
		}
		c, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(port), 100*time.Millisecond)
		if err == nil {
			c.Close()
			return nil
		}
		time.Sleep(10 * time.Millisecond)
	}
	return fmt.Errorf("mosquitto not listening on port %d after 5 s", port)
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// producer is a QoS 1 publisher on a broker, like a PLC gateway. It signs
// in as user "producer" when the broker has users.
type producer struct {
	t   testing.TB
	cli mqtt.Client
}

func newProducer(t testing.TB, b *broker) *producer {
	t.Helper()
	opts := mqtt.NewClientOptions().AddBroker(fmt.Sprintf("tcp://127.0.0.1:%d", b.Port)).
		SetClientID(fmt.Sprintf("producer-%d", time.Now().UnixNano())).SetAutoReconnect(false).SetConnectRetry(false)
	if pw, ok := b.users["producer"]; ok {
		opts.SetUsername("producer").SetPassword(pw)
	}
	if b.tls {
		pem, err := os.ReadFile(b.CAFile)
		if err != nil {
			t.Fatal(err)
		}
		pool := x509.NewCertPool()
		pool.AppendCertsFromPEM(pem)
		opts.Servers = nil
		opts.AddBroker(fmt.Sprintf("ssl://127.0.0.1:%d", b.Port)).SetTLSConfig(&tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12})
	}
	cli := mqtt.NewClient(opts)
	if tok := cli.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("producer connect: %v", tok.Error())
	}
	t.Cleanup(func() { cli.Disconnect(100) })
	return &producer{t, cli}
}

// publish sends messages at QoS 1 in order and waits for the broker's
// PUBACKs.
func (p *producer) publish(topic string, bodies ...string) {
	p.t.Helper()
	toks := make([]mqtt.Token, len(bodies))
	for i, body := range bodies {
		toks[i] = p.cli.Publish(topic, 1, false, body)
	}
	for _, tok := range toks {
		if !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
			p.t.Fatalf("publish to %s: %v", topic, tok.Error())
		}
	}
}

// memQueue is an appender in memory that records what it takes and
// refuses while refuse is set.
type memQueue struct {
	mu     sync.Mutex
	msgs   []*queue.Message
	refuse error
	calls  int
}

func (q *memQueue) Append(ctx context.Context, msgs ...*queue.Message) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	q.calls++
	if q.refuse != nil {
		return q.refuse
	}
	q.msgs = append(q.msgs, msgs...)
	return nil
}

func (q *memQueue) setRefuse(err error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.refuse = err
}

func (q *memQueue) messages() []*queue.Message {
	q.mu.Lock()
	defer q.mu.Unlock()
	return append([]*queue.Message(nil), q.msgs...)
}

// bodies returns the bodies taken from topic, in order.
func (q *memQueue) bodies(topic string) []string {
	var out []string
	for _, m := range q.messages() {
		if m.Properties[PropTopic] == topic {
			out = append(out, string(m.Body))
		}
	}
	return out
}

var errFull = fmt.Errorf("append: %w", queue.ErrFull)

// env is a mutable environment for getenv.
type env struct {
	mu   sync.Mutex
	vars map[string]string
}

func newEnv(vars map[string]string) *env { return &env{vars: maps.Clone(vars)} }

func (e *env) get(k string) string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.vars[k]
}

func (e *env) set(k, v string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.vars[k] = v
}

// identity is an IoT Edge module's environment: stable client IDs.
var identity = map[string]string{"IOTEDGE_DEVICEID": "plant1", "IOTEDGE_MODULEID": "relay"}

// newManager returns a Manager with quick retries, logging to the test.
func newManager(t testing.TB, q appender, getenv func(string) string, log zerolog.Logger) *Manager {
	if getenv == nil {
		getenv = newEnv(identity).get
	}
	m := NewManager(q, "telemetry", log, getenv)
	m.retry = backoff.Backoff{Base: 50 * time.Millisecond, Max: 300 * time.Millisecond}
	m.appendRetry = backoff.Backoff{Base: 20 * time.Millisecond, Max: 100 * time.Millisecond}
	return m
}

func testLog(t testing.TB) zerolog.Logger {
	return zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.InfoLevel)
}

// run runs m.Run until stop or the end of the test; stop returns Run's
// error once it has returned.
func run(t testing.TB, m *Manager) (stop func() error) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	var once sync.Once
	var err error
	stop = func() error {
		once.Do(func() {
			cancel()
			select {
			case err = <-done:
			case <-time.After(10 * time.Second):
				err = errors.New("Run did not return 10 s after its context ended")
			}
		})
		return err
	}
	t.Cleanup(func() {
		if err := stop(); err != nil {
			t.Error(err)
		}
	})
	waitFor(t, "Run serving", func() bool {
		m.mu.Lock()
		defer m.mu.Unlock()
		return m.running
	})
	return stop
}

// waitFor polls cond until it holds, failing the test after 10 s.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// syncBuffer is written by one goroutine and read by the test.
type syncBuffer = syncbuf.Buffer
