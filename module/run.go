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
	"github.com/rs/zerolog"
	"golang.org/x/sync/errgroup"

	"github.com/edgetpm/edgetpm/internal/assignment"
	"github.com/edgetpm/edgetpm/internal/cli"
	"github.com/edgetpm/edgetpm/internal/sas"
	"github.com/edgetpm/edgetpm/internal/tlsconfig"
	"github.com/edgetpm/edgetpm/module/edgehub"
	"github.com/edgetpm/edgetpm/module/queue"
	"github.com/edgetpm/edgetpm/module/relay"
	"github.com/edgetpm/edgetpm/module/source"
	"github.com/edgetpm/edgetpm/module/twin"
	"github.com/edgetpm/edgetpm/module/workload"
	"github.com/edgetpm/edgetpm/provisioner/tpm"
)

// env looks up an environment variable (os.Getenv in main).
type env func(string) string

func run(ctx context.Context, args []string, stdout, stderr io.Writer, getenv env) error {
	if len(args) > 0 && args[0] == "health" {
		return health(ctx, envOr(getenv, "EDGE_RELAY_METRICS_ADDR", ":9600"))
	}
	fs := flag.NewFlagSet("edge-relay", flag.ContinueOnError)
	dataDir := fs.String("data", envOr(getenv, "EDGE_RELAY_DATA", "/data"), "`DIR` for the queue and the last good configuration: a volume, so they survive re-creating the container [$EDGE_RELAY_DATA]")
	deviceState := fs.String("device-state", getenv("EDGE_RELAY_DEVICE_STATE"), "run as the device in `FILE`, the assignment edge-provisioner saved, signing in the TPM [$EDGE_RELAY_DEVICE_STATE]")
	listen := fs.String("metrics-addr", envOr(getenv, "EDGE_RELAY_METRICS_ADDR", ":9600"), "`ADDRESS` serving /metrics, /healthz and /readyz [$EDGE_RELAY_METRICS_ADDR]")
	caFile := fs.String("ca-file", getenv("EdgeModuleCACertificateFile"), "trust the CA certificates in `PEM` (development and device mode; IoT Edge gives its own) [$EdgeModuleCACertificateFile]")
	tokenTTL := fs.Duration("token-ttl", edgehub.DefaultTokenTTL, "`LIFETIME` of each SAS token; a new one replaces it at 80% [$EDGE_RELAY_TOKEN_TTL]")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: edge-relay [flags]\n       edge-relay health   (exit 0 when /healthz on the metrics address answers 200)\n\n")
		fs.PrintDefaults()
		fmt.Fprintf(fs.Output(), "\n%s\n", cli.ExitStatus)
	}
	if v := getenv("EDGE_RELAY_TOKEN_TTL"); v != "" {
		if err := fs.Set("token-ttl", v); err != nil {
			return cli.Usagef("EDGE_RELAY_TOKEN_TTL: %w", err)
		}
	}
	if err := cli.Parse(fs, args, stdout); err != nil {
		return err
	}
	if *tokenTTL < time.Second {
		return cli.Usagef("--token-ttl %v: want at least 1s", *tokenTTL)
	}
	level := new(logLevel)
	level.Store(int32(zerolog.InfoLevel))
	log := newLogger(stderr, level)

	conn, err := connection(ctx, getenv, *deviceState, *caFile)
	if err != nil {
		return err
	}
	defer conn.close()
	log.Info().Str("mode", conn.mode).Str("device", conn.id.DeviceID).Str("module", conn.id.ModuleID).Str("host", conn.id.Host).Msg("starting")

	if err := os.MkdirAll(*dataDir, 0o700); err != nil {
		return fmt.Errorf("data folder: %w", err)
	}
	a := &app{log: log, level: level, started: time.Now()}
	var sess *edgehub.Session
	rec := &twin.Reconciler{
		Get:       func(ctx context.Context) ([]byte, error) { return sess.GetTwin(ctx) },
		Report:    func(ctx context.Context, p []byte) error { return sess.ReportProperties(ctx, p) },
		Apply:     a.apply,
		StatePath: filepath.Join(*dataDir, "desired.json"),
		Counters:  func() any { return a.stats() },
		Log:       log,
	}
	cfg, err := rec.Start()
	if err != nil {
		return err
	}
	q, err := queue.Open(queue.Options{
		Dir: filepath.Join(*dataDir, "queue"), MaxBytes: cfg.Queue.MaxBytes, MaxAge: time.Duration(cfg.Queue.MaxAge),
		WhenFull: policy(cfg.Queue.WhenFull), Log: log,
	})
	if err != nil {
		return err
	}
	defer q.Close()
	sess, err = edgehub.New(edgehub.Config{
		Identity: conn.id,
		Signer:   conn.signer,
		RootCAs:  conn.roots,
		TokenTTL: *tokenTTL,
		Input:    func(ctx context.Context, input string, m *edgehub.Message) error { return a.relay.Input(ctx, input, m) },
		Method:   a.method,
		Desired: func(patch []byte) {
			if err := rec.Patch(ctx, patch); err != nil {
				log.Warn().Err(err).Msg("desired patch")
			}
		},
		Connected: func(ctx context.Context) {
			if err := rec.Sync(ctx); err != nil {
				log.Warn().Err(err).Msg("twin sync")
			}
		},
		Log: log,
	})
	if err != nil {
		return err
	}
	a.session, a.queue = sess, q
	a.relay = relay.New(q, sess, cfg, relay.Options{Log: log})
	a.relay.Metrics.SetConnected(sess.Connected)
	a.relay.Metrics.TokenRenewals(sess.TokenRenewals)
	sourcesDir := filepath.Join(*dataDir, "sources")
	if err := os.MkdirAll(sourcesDir, 0o700); err != nil {
		return fmt.Errorf("data folder: %w", err)
	}
	a.sources = source.NewManager(a.relay, source.Config{
		Output: cfg.Output, Identity: conn.id.DeviceID + "/" + conn.id.ModuleID,
		StateDir: sourcesDir, Getenv: getenv, Log: log,
	})
	if err := a.apply(cfg); err != nil {
		return err
	}

	srv := &http.Server{Addr: *listen, Handler: a.relay.Handler(), ReadHeaderTimeout: 10 * time.Second}
	ln, err := net.Listen("tcp", *listen)
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

// policy maps the twin's whenFull to the queue's.
func policy(whenFull string) queue.Policy {
	if whenFull == "dropOldest" {
		return queue.DropOldest
	}
	return queue.Backpressure
}

func envOr(getenv env, key, def string) string {
	if v := getenv(key); v != "" {
		return v
	}
	return def
}

// conn is how this process connects: its identity, signer and trust.
type conn struct {
	mode   string
	id     edgehub.Identity
	signer sas.Signer
	roots  *x509.CertPool
	close  func()
}

// connection picks the mode from the environment: a connection string
// (development), the IoT Edge environment (a module), or a device
// assignment (device mode, TPM). What the settings or environment got
// wrong is a usage error; a TPM or workload API that fails is not. $EDGE_RELAY_HUB_ADDRESS, when set, is
// dialled instead of the host (the lab, where the gateway's name does not
// resolve); the certificate is still checked against the host's name.
func connection(ctx context.Context, getenv env, deviceState, caFile string) (*conn, error) {
	c, err := pickConnection(ctx, getenv, deviceState, caFile)
	if err == nil {
		c.id.Address = getenv("EDGE_RELAY_HUB_ADDRESS")
	}
	return c, err
}

func pickConnection(ctx context.Context, getenv env, deviceState, caFile string) (*conn, error) {
	roots, err := tlsconfig.TrustFile(caFile)
	if err != nil {
		return nil, cli.Usage(err)
	}
	nothing := func() {}
	if cs := envOr(getenv, "EdgeHubConnectionString", getenv("IotHubConnectionString")); cs != "" {
		id, key, err := edgehub.ParseConnectionString(cs)
		if err != nil {
			return nil, cli.Usage(err)
		}
		return &conn{"development", id, sas.Key(key), roots, nothing}, nil
	}
	if deviceState != "" {
		a, err := assignment.Load(deviceState)
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
		return &conn{"device", id, t, roots, func() { t.Close() }}, nil
	}
	e, err := edgehub.EnvironmentFrom(getenv)
	if err != nil {
		return nil, cli.Usagef("%w (or set EdgeHubConnectionString, or --device-state)", err)
	}
	w, err := workload.New(e.WorkloadURI, e.ModuleID, e.GenerationID, e.APIVersion)
	if err != nil {
		return nil, cli.Usage(err)
	}
	bundle, err := w.TrustBundle(ctx)
	if err != nil {
		return nil, fmt.Errorf("trust bundle: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(bundle) {
		return nil, errors.New("the workload API's trust bundle holds no certificate")
	}
	return &conn{"module", e.Identity(), w, pool, nothing}, nil
}

// logLevel is the level setLogLevel changes while logs are written.
type logLevel struct{ atomic.Int32 }

func (l *logLevel) get() zerolog.Level { return zerolog.Level(l.Load()) }
