package main

import (
	"bytes"
	"context"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"

	"github.com/google/go-tpm/tpm2"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/rs/zerolog"
	"golang.org/x/sync/errgroup"

	"github.com/edgetpm/edgetpm/internal/assignment"
	"github.com/edgetpm/edgetpm/internal/cli"
	"github.com/edgetpm/edgetpm/internal/sas"
	"github.com/edgetpm/edgetpm/internal/tlsconfig"
	"github.com/edgetpm/edgetpm/module/deadletter"
	"github.com/edgetpm/edgetpm/module/edgehub"
	"github.com/edgetpm/edgetpm/module/queue"
	"github.com/edgetpm/edgetpm/module/relay"
	"github.com/edgetpm/edgetpm/module/settings"
	"github.com/edgetpm/edgetpm/module/source"
	"github.com/edgetpm/edgetpm/module/twin"
	"github.com/edgetpm/edgetpm/module/workload"
	"github.com/edgetpm/edgetpm/provisioner/tpm"
)

// env looks up an environment variable (os.Getenv in main).
type env func(string) string

const usage = `usage: edge-relay [flags]
       edge-relay health [flags]   exit 0 when /healthz on the metrics address answers 200

Settings come from a TOML file (--config or $EDGE_RELAY_CONFIG), then the
environment, then flags. The identity comes, first found first, from
$EdgeHubConnectionString (or $IotHubConnectionString) in development; in
device mode from --device-state (the DPS assignment) or from --tpm (the hub
identity 'edge-provisioner identity set' put in the TPM), which exclude each
other; else from IoT Edge's IOTEDGE_* variables. A connection string with
--tpm is refused too.

` + cli.ExitStatus + `

Flags:
`

func run(ctx context.Context, args []string, stdout, stderr io.Writer, getenv env) error {
	name := "edge-relay"
	if len(args) > 0 && args[0] == "health" {
		name, args = "edge-relay health", args[1:]
	}
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	l := settings.NewLoader(fs)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), usage)
		fs.PrintDefaults()
	}
	if err := cli.Parse(fs, args, stdout); err != nil {
		return err
	}
	s, err := l.Load(getenv)
	if err != nil {
		return cli.Usage(err)
	}
	if name == "edge-relay health" {
		return health(ctx, s.MetricsAddr)
	}
	level := new(logLevel)
	level.Store(int32(zerolog.InfoLevel))
	log := newLogger(stderr, level)

	conn, err := connection(ctx, getenv, s)
	if err != nil {
		return err
	}
	defer conn.close()
	log.Info().Str("mode", conn.mode).Str("device", conn.id.DeviceID).Str("module", conn.id.ModuleID).Str("host", conn.id.Host).Msg("starting")

	if err := os.MkdirAll(s.Data, 0o700); err != nil {
		return fmt.Errorf("data folder: %w", err)
	}
	a := &app{log: log, level: level, started: time.Now()}
	var sess *edgehub.Session
	rec := &twin.Reconciler{
		Get:       func(ctx context.Context) ([]byte, error) { return sess.GetTwin(ctx) },
		Report:    func(ctx context.Context, p []byte) error { return sess.ReportProperties(ctx, p) },
		Apply:     a.apply,
		StatePath: filepath.Join(s.Data, "desired.json"),
		Counters:  func() any { return a.stats() },
		Log:       log,
	}
	cfg, err := rec.Start(ctx)
	if err != nil {
		return err
	}
	// A queue per drain priority in use (docs/relay.md#drain-policy).
	qs := newQueues(s.Data, queue.Options{
		MaxBytes: cfg.Queue.MaxBytes, MaxAge: time.Duration(cfg.Queue.MaxAge), WhenFull: queue.ParsePolicy(cfg.Queue.WhenFull), Log: log,
	})
	defer qs.Close()
	q, err := qs.Open(0)
	if err != nil {
		return err
	}
	lanes, err := qs.Existing()
	if err != nil {
		return err
	}
	sess, err = edgehub.New(edgehub.Config{
		Identity: conn.id,
		Signer:   conn.signer,
		RootCAs:  conn.roots,
		TokenTTL: time.Duration(s.TokenTTL),
		Input:    func(ctx context.Context, input string, m *edgehub.Message) error { return a.relay.Input(ctx, input, m) },
		Method:   a.method,
		Desired: func(ctx context.Context, patch []byte) {
			if err := rec.Patch(ctx, patch); err != nil {
				log.Warn().Err(err).Msg("desired patch")
			}
		},
		Connected: rec.Connected,
		Refused: func(ctx context.Context) error {
			if conn.refused == nil {
				return nil
			}
			err := conn.refused(ctx)
			if errors.Is(err, errHubIdentityChanged) {
				return err
			}
			if err != nil {
				// Read again at the next refusal.
				log.Warn().Err(err).Msg("hub identity")
			}
			return nil
		},
		Log: log,
	})
	if err != nil {
		return err
	}
	// What can never be delivered is kept here, acknowledged to its
	// producer only once durable (docs/relay.md#dead-letters).
	dead, err := deadletter.Open(filepath.Join(s.Data, "deadletters"), deadletter.Options{})
	if err != nil {
		return err
	}
	a.session, a.dead = sess, dead
	a.relay = relay.New(q, sess, cfg, relay.Options{DeadLetters: dead, Log: log, Open: qs.Open, Lanes: lanes})
	a.relay.Metrics.SetConnected(sess.Connected)
	a.relay.Metrics.TokenRenewals(sess.TokenRenewals)
	// The runtime's and the process's own figures (memory, GC, CPU), as
	// Prometheus exporters usually serve them.
	a.relay.Metrics.Registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	sourcesDir := filepath.Join(s.Data, "sources")
	if err := os.MkdirAll(sourcesDir, 0o700); err != nil {
		return fmt.Errorf("data folder: %w", err)
	}
	a.sources = source.NewManager(a.relay, source.Config{
		Output: cfg.Output, Identity: conn.id.DeviceID + "/" + conn.id.ModuleID,
		StateDir: sourcesDir, DeadLetters: dead, Getenv: sourcePasswords(getenv), Log: log,
	})
	if err := a.apply(ctx, cfg); err != nil {
		return err
	}

	srv := metricsServer(a.relay.Handler())
	ln, err := net.Listen("tcp", s.MetricsAddr)
	if err != nil {
		return fmt.Errorf("metrics: %w", err)
	}
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error { return sess.Run(ctx) })
	g.Go(func() error { return a.relay.Run(ctx) })
	g.Go(func() error { return a.sources.Run(ctx) })
	g.Go(func() error { return a.report(ctx, sess) })
	g.Go(func() error {
		if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			return err
		}
		return nil
	})
	g.Go(func() error {
		<-ctx.Done()
		return srv.Close()
	})
	return g.Wait()
}

// healthTimeout bounds "edge-relay health", below the image
// HEALTHCHECK's timeout, so that the check reports why rather than being
// killed.
const healthTimeout = 3 * time.Second

// health asks the running edge-relay's /healthz on listen, its
// --metrics-addr, for the container's HEALTHCHECK: a scratch image has no
// curl. A listen address without a host, or an unspecified one, is
// reached on the loopback address.
func health(ctx context.Context, listen string) error {
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return cli.Usagef("health: metrics address %q: %w", listen, err)
	}
	if ip := net.ParseIP(host); host == "" || ip != nil && ip.IsUnspecified() {
		host = "127.0.0.1"
	}
	ctx, cancel := context.WithTimeout(ctx, healthTimeout)
	defer cancel()
	url := "http://" + net.JoinHostPort(host, port) + "/healthz"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return fmt.Errorf("health: %w", err)
	}
	// No proxy (the check is local) and no idle connection left behind.
	tr := &http.Transport{DisableKeepAlives: true}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		return fmt.Errorf("health: %w", err) // err names the URL
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("health: GET %s: %s: %s", url, resp.Status, bytes.TrimSpace(body))
	}
	return nil
}

func envOr(getenv env, key, def string) string {
	if v := getenv(key); v != "" {
		return v
	}
	return def
}

// sourcePasswords is getenv for the sources' passwords: the twin names
// the variable, so only names twin.PasswordEnvAllowed accepts are read,
// never the relay's identity or settings, whatever the configuration.
func sourcePasswords(getenv env) func(string) string {
	return func(name string) string {
		if twin.PasswordEnvAllowed(name) != nil {
			return ""
		}
		return getenv(name)
	}
}

// conn is how this process connects: its identity, signer and trust.
type conn struct {
	mode   string
	id     edgehub.Identity
	signer sas.Signer
	roots  *x509.CertPool
	close  func()
	// refused, when set, checks the identity after the hub refused a
	// token: errHubIdentityChanged when it is no longer this one.
	refused func(ctx context.Context) error
}

// errHubIdentityChanged: the TPM's hub identity is no longer the one the
// relay started with ('identity set' replaced or 'identity clear' removed
// it). The relay exits with it (exit 1); its unit's Restart=on-failure
// starts it again with the new identity.
var errHubIdentityChanged = errors.New("the TPM's hub identity changed")

// connection picks the mode from the environment: a connection string
// (development), a device assignment or the TPM's hub identity (device
// mode, signing in the TPM), or the IoT Edge environment (a module). What the settings or environment got
// wrong is a usage error; a TPM or workload API that fails is not. The
// hub address, when set, is dialled instead of the host (the lab, where
// the gateway's name does not resolve); the certificate is still checked
// against the host's name.
func connection(ctx context.Context, getenv env, s *settings.Settings) (*conn, error) {
	c, err := pickConnection(ctx, getenv, s)
	if err == nil {
		c.id.Address = s.HubAddress
	}
	return c, err
}

func pickConnection(ctx context.Context, getenv env, s *settings.Settings) (*conn, error) {
	roots, err := tlsconfig.TrustFile(s.CAFile)
	if err != nil {
		return nil, cli.Usage(err)
	}
	nothing := func() {}
	if cs := envOr(getenv, "EdgeHubConnectionString", getenv("IotHubConnectionString")); cs != "" {
		if s.TPM != "" {
			name := "EdgeHubConnectionString"
			if getenv(name) == "" {
				name = "IotHubConnectionString"
			}
			return nil, cli.Usagef("$%s is set and so is --tpm (tpm, $EDGE_RELAY_TPM): the identity comes from the connection string or from the TPM's hub identity, not both", name)
		}
		id, key, err := edgehub.ParseConnectionString(cs)
		if err != nil {
			return nil, cli.Usage(err)
		}
		return &conn{mode: "development", id: id, signer: sas.Key(key), roots: roots, close: nothing}, nil
	}
	if s.TPM != "" {
		return hubIdentityConnection(ctx, s.TPM, s.AuthKeyIndex, roots)
	}
	if s.DeviceState != "" {
		a, err := assignment.Load(s.DeviceState)
		if err != nil {
			return nil, cli.Usage(err)
		}
		t, err := tpm.Open(a.TPM, tpm.Config{AuthKeyHandle: tpm2.TPMHandle(a.AuthKeyHandle)})
		if errors.Is(err, tpm.ErrURI) {
			return nil, cli.Usage(err)
		}
		if err != nil {
			return nil, err
		}
		id := edgehub.Identity{HubHostName: a.AssignedHub, DeviceID: a.DeviceID, Host: a.AssignedHub}
		return &conn{mode: "device", id: id, signer: t, roots: roots, close: func() { t.Close() }}, nil
	}
	e, err := edgehub.EnvironmentFrom(getenv)
	if err != nil {
		return nil, cli.Usagef("%w (or set EdgeHubConnectionString, or --device-state, or --tpm)", err)
	}
	w, err := workload.New(e.WorkloadURI, e.ModuleID, e.GenerationID, e.APIVersion)
	if err != nil {
		return nil, cli.Usage(err)
	}
	bundle, err := w.TrustBundle(ctx)
	if err != nil {
		return nil, fmt.Errorf("trust bundle: %w", err)
	}
	pool, err := tlsconfig.TrustBundle(bundle)
	if err != nil {
		return nil, fmt.Errorf("workload API: %w", err)
	}
	return &conn{mode: "module", id: e.Identity(), signer: w, roots: pool, close: nothing}, nil
}

// hubIdentityConnection is device mode as the hub identity in the TPM at
// uri says: host name and device ID from its NV record, every token signed
// by the key at the auth key index. The record is checked as a connection
// string's fields are: they go into the user name, topics and audience.
func hubIdentityConnection(ctx context.Context, uri string, index uint32, roots *x509.CertPool) (*conn, error) {
	t, err := tpm.Open(uri, tpm.Config{AuthKeyHandle: tpm.AuthKeyBase + tpm2.TPMHandle(index)})
	if errors.Is(err, tpm.ErrURI) {
		return nil, cli.Usage(err)
	}
	if err != nil {
		return nil, err
	}
	h, err := t.HubIdentity(ctx)
	if err == nil && (!sas.ValidHostName(h.HostName) || !sas.ValidID(h.DeviceID)) {
		err = fmt.Errorf("hub identity in the TPM at %s: the host name or device ID in NV is not one IoT Hub issues", uri)
	}
	if errors.Is(err, tpm.ErrNoHubIdentity) {
		err = fmt.Errorf("%w at %s: put one there with 'edge-provisioner identity set', or run with --device-state", err, uri)
	}
	if err != nil {
		t.Close()
		return nil, err
	}
	id := edgehub.Identity{HubHostName: h.HostName, DeviceID: h.DeviceID, Host: h.HostName}
	// The key at the auth key handle is whatever 'identity set' last put
	// there, so a replaced identity signs with the new key for the old
	// device, which the hub refuses: then the record tells what changed.
	refused := func(ctx context.Context) error {
		cur, err := t.HubIdentity(ctx)
		if errors.Is(err, tpm.ErrNoHubIdentity) {
			return fmt.Errorf("%w: the TPM at %s holds none now (it was device %s at %s); exiting", errHubIdentityChanged, uri, h.DeviceID, h.HostName)
		}
		if err != nil {
			return err
		}
		if *cur != *h {
			return fmt.Errorf("%w: device %s at %s now, not device %s at %s as at start; exiting to be started again with it", errHubIdentityChanged, cur.DeviceID, cur.HostName, h.DeviceID, h.HostName)
		}
		return nil
	}
	return &conn{mode: "device", id: id, signer: t, roots: roots, close: func() { t.Close() }, refused: refused}, nil
}

// logLevel is the level setLogLevel changes while logs are written.
type logLevel struct{ atomic.Int32 }

func (l *logLevel) get() zerolog.Level { return zerolog.Level(l.Load()) }
