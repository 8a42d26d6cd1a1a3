// Package mosquittotest runs a real Mosquitto per test, on loopback, and
// QoS 1 producers publishing to it, like a plant's PLC gateways.
package mosquittotest

import (
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edgetpm/edgetpm/internal/tlsconfig"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/edgetpm/edgetpm/internal/daemon"
	"github.com/edgetpm/edgetpm/internal/emulator/pki"
	"github.com/edgetpm/edgetpm/internal/testharness/peertest"
)

// Broker is a Mosquitto of one test, on loopback, with its own
// configuration and no persistence.
type Broker struct {
	Port int
	URL  string
	// CAFile is the CA of a TLS listener.
	CAFile string

	t     testing.TB
	users map[string]string
	bin   string
	dir   string
	extra string // configuration lines
	tls   bool
	peer  *peertest.Peer
}

type Options struct {
	// Users are name → password in a password_file; none means anonymous.
	Users map[string]string
	TLS   bool
	Extra []string // more configuration lines
}

func Start(t testing.TB, o Options) *Broker {
	t.Helper()
	b := &Broker{t: t, users: o.Users, bin: peertest.Need(t, "mosquitto"), dir: t.TempDir(), tls: o.TLS}
	lines := []string{"allow_anonymous true"}
	if len(o.Users) > 0 {
		pw := filepath.Join(b.dir, "passwords")
		for u, p := range o.Users {
			args := []string{"-b", pw, u, p}
			if _, err := os.Stat(pw); err != nil {
				args = append([]string{"-c"}, args...)
			}
			if out, err := exec.Command(peertest.Need(t, "mosquitto_passwd"), args...).CombinedOutput(); err != nil {
				t.Fatalf("mosquitto_passwd: %v\n%s", err, out)
			}
		}
		lines = []string{"allow_anonymous false", "password_file " + pw}
	}
	if o.TLS {
		lines = append(lines, b.writeTLS(t)...)
	}
	b.extra = strings.Join(append(lines, o.Extra...), "\n")
	b.peer = peertest.New(t, "mosquitto")
	b.start()
	return b
}

// writeTLS makes a CA and a server certificate for 127.0.0.1.
func (b *Broker) writeTLS(t testing.TB) []string {
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
func (b *Broker) start() {
	b.t.Helper()
	fixed := b.Port != 0
	b.peer.Start(10, func(int) (daemon.Spec, error) {
		if !fixed {
			p, err := daemon.FreePorts(1)
			if err != nil {
				return daemon.Spec{}, err
			}
			b.Port = p
		}
		conf := filepath.Join(b.dir, "mosquitto.conf")
		text := fmt.Sprintf("user root\npersistence false\nlog_dest stderr\nlog_type error\nlog_type warning\nlistener %d 127.0.0.1\n%s\n", b.Port, b.extra)
		if err := os.WriteFile(conf, []byte(text), 0o600); err != nil {
			return daemon.Spec{}, err
		}
		return daemon.Spec{Path: b.bin, Args: []string{"-c", conf}, Ready: daemon.Listening(fmt.Sprintf("127.0.0.1:%d", b.Port)), Timeout: 5 * time.Second}, nil
	})
	scheme := "tcp"
	if b.tls {
		scheme = "mqtts"
	}
	b.URL = fmt.Sprintf("%s://127.0.0.1:%d", scheme, b.Port)
}

// Pid is Mosquitto's process ID, so a benchmark can read its CPU time.
func (b *Broker) Pid() int { return b.peer.Pid() }

// Stop kills Mosquitto, like a crash: its sessions are gone.
func (b *Broker) Stop() { b.peer.Kill() }

// Restart stops Mosquitto and starts it again on the same port.
func (b *Broker) Restart() {
	b.t.Helper()
	b.Stop()
	b.start()
}

// Producer is a QoS 1 publisher on a broker, like a PLC gateway. It signs
// in as user "producer" when the broker has users.
type Producer struct {
	Client mqtt.Client
	t      testing.TB
}

func NewProducer(t testing.TB, b *Broker) *Producer {
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
		opts.AddBroker(fmt.Sprintf("ssl://127.0.0.1:%d", b.Port)).SetTLSConfig(tlsconfig.Client(pool, ""))
	}
	cli := mqtt.NewClient(opts)
	if tok := cli.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("producer connect: %v", tok.Error())
	}
	t.Cleanup(func() { cli.Disconnect(100) })
	return &Producer{cli, t}
}

// Publish sends messages at QoS 1 in order and waits for the broker's
// PUBACKs.
func (p *Producer) Publish(topic string, bodies ...string) {
	p.t.Helper()
	toks := make([]mqtt.Token, len(bodies))
	for i, body := range bodies {
		toks[i] = p.Client.Publish(topic, 1, false, body)
	}
	for _, tok := range toks {
		if !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
			p.t.Fatalf("publish to %s: %v", topic, tok.Error())
		}
	}
}

// Proxy forwards TCP connections to a broker, so that a test can cut them
// without the broker noticing first.
type Proxy struct {
	URL string

	l      net.Listener
	to     string
	mu     sync.Mutex
	conns  []net.Conn
	refuse bool
}

// NewProxy listens on a free loopback port and forwards to b.
func NewProxy(t testing.TB, b *Broker) *Proxy {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &Proxy{URL: "tcp://" + l.Addr().String(), l: l, to: fmt.Sprintf("127.0.0.1:%d", b.Port)}
	var wg sync.WaitGroup
	wg.Go(func() { p.serve(&wg) })
	t.Cleanup(func() {
		l.Close()
		p.Cut(false)
		wg.Wait()
	})
	return p
}

func (p *Proxy) serve(wg *sync.WaitGroup) {
	for {
		in, err := p.l.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		refuse := p.refuse
		p.mu.Unlock()
		if refuse {
			in.Close()
			continue
		}
		out, err := net.Dial("tcp", p.to)
		if err != nil {
			in.Close()
			continue
		}
		p.mu.Lock()
		p.conns = append(p.conns, in, out)
		p.mu.Unlock()
		wg.Go(func() { io.Copy(out, in); out.Close() })
		wg.Go(func() { io.Copy(in, out); in.Close() })
	}
}

// Cut closes every connection forwarded so far, both ways; with refuse
// set, new connections are closed at once until Restore.
func (p *Proxy) Cut(refuse bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.refuse = refuse
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
}

// Restore forwards new connections again.
func (p *Proxy) Restore() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.refuse = false
}
