package lab

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log"
	"net"
	"net/http"
	"path/filepath"
	"slices"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/sync/errgroup"

	"github.com/edgetpm/edgetpm/internal/atomicfile"
	"github.com/edgetpm/edgetpm/internal/emulator/dpsemu"
	"github.com/edgetpm/edgetpm/internal/emulator/hubemu"
	"github.com/edgetpm/edgetpm/internal/emulator/pki"
	"github.com/edgetpm/edgetpm/internal/emulator/workloademu"
)

// The lab's served parts, one implementation for lab up and for the lab
// dps, hub and workload daemons: each Start opens its listeners, serves on
// goroutines of its own until Close, and writes where it listens into the
// state folder.

// shutdownTimeout bounds the wait for requests in flight on Close.
const shutdownTimeout = 5 * time.Second

// serving owns the goroutines that serve a part: the first to fail ends the
// others, and Close ends them all and joins them.
type serving struct {
	cancel context.CancelFunc
	g      *errgroup.Group
	done   <-chan struct{}
}

// startDaemon runs each of serve on a goroutine until Close; each returns
// nil once its ctx ends, or an error when it cannot go on.
func startServing(serve ...func(ctx context.Context) error) *serving {
	ctx, cancel := context.WithCancel(context.Background())
	g, gctx := errgroup.WithContext(ctx)
	for _, f := range serve {
		g.Go(func() error { return f(gctx) })
	}
	return &serving{cancel: cancel, g: g, done: gctx.Done()}
}

// Done is closed when the part stopped serving: it failed (Close says
// why), or it was closed.
func (d *serving) Done() <-chan struct{} { return d.done }

// Close stops the part, waits for its goroutines and returns why it
// failed, if it did.
func (d *serving) Close() error {
	d.cancel()
	return d.g.Wait()
}

// serveHTTPS serves h over TLS on ln until ctx ends, then shuts down.
// HTTP/1.1 only: the device SDKs speak it (docs/dps-protocol.md#endpoints-and-headers), and DPS's
// reset fault needs a connection it can cut mid-response.
func serveHTTPS(ctx context.Context, ln net.Listener, h http.Handler, tlsConfig *tls.Config, logger zerolog.Logger) error {
	var protocols http.Protocols
	protocols.SetHTTP1(true)
	srv := &http.Server{
		Handler:           h,
		TLSConfig:         tlsConfig,
		Protocols:         &protocols,
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          log.New(logger, "", 0),
		// Requests end with ctx: a long poll (lab messages --follow)
		// must not hold the shutdown for shutdownTimeout.
		BaseContext: func(net.Listener) context.Context { return ctx },
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.ServeTLS(ln, "", "") }()
	select {
	case err := <-errc:
		return fmt.Errorf("serve HTTPS on %s: %w", ln.Addr(), err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), shutdownTimeout)
	defer cancel()
	shutErr := srv.Shutdown(sctx)
	if err := <-errc; !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serve HTTPS on %s: %w", ln.Addr(), err)
	}
	if shutErr != nil {
		return fmt.Errorf("shut down HTTPS on %s: %w", ln.Addr(), shutErr)
	}
	return nil
}

// listen listens on addr, 127.0.0.1:0 when empty.
func listen(addr string) (net.Listener, error) {
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen: %w", err)
	}
	return ln, nil
}

// DPSConfig says how StartDPS serves.
type DPSConfig struct {
	// Listen is the address of HTTPS; default 127.0.0.1 on a free port.
	Listen string
	// Hubs are the linked IoT hubs; default dpsemu.DefaultHub.
	Hubs []dpsemu.Hub
	// RetryAfter is the retry-after, in seconds, sent while assigning.
	RetryAfter int
	// Named also serves both APIs at the service host name of the
	// connection string: on port 443 of its LoopbackAddr, where Azure's
	// service SDKs and az reach DPS from the connection string alone once
	// the name resolves there (lab hosts). When that port cannot be bound,
	// the emulator serves without it and DPSEmulator.NamedErr says why.
	Named bool
	Log   zerolog.Logger
}

// DPSEmulator is the lab's DPS emulator, served over HTTPS. Close stops
// it.
type DPSEmulator struct {
	*dpsemu.Server
	// Endpoint is the https URL of its device and service APIs.
	Endpoint string
	// Named is https:// and the service host name when DPSConfig.Named
	// served it; NamedErr is why not, when it did not.
	Named    string
	NamedErr error
	*serving
}

// StartDPS serves the lab's DPS emulator, with its state and the device
// registry in the state folder, over HTTPS with the lab CA's certificate
// for the service host name, localhost, 127.0.0.1, ::1 and the host of
// cfg.Listen. It writes its
// endpoint, ID scope and service connection string (0600) into the state
// folder, for lab enroll and the devices.
func StartDPS(stateDir string, ca *pki.CA, cfg DPSConfig) (*DPSEmulator, error) {
	emu, err := newDPS(stateDir, cfg.Hubs, cfg.RetryAfter, cfg.Log)
	if err != nil {
		return nil, err
	}
	service := emu.ConnectionString().HostName
	names := []string{service, "localhost", "127.0.0.1", "::1"}
	if host, _, err := net.SplitHostPort(cfg.Listen); err == nil && host != "" && !slices.Contains(names, host) {
		if ip := net.ParseIP(host); ip == nil || !ip.IsUnspecified() {
			names = append(names, host)
		}
	}
	tlsConfig, err := ca.ServerTLS(names...)
	if err != nil {
		return nil, err
	}
	ln, err := listen(cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("dps: %w", err)
	}
	d := &DPSEmulator{Server: emu, Endpoint: "https://" + ln.Addr().String()}
	serve := []func(context.Context) error{func(ctx context.Context) error { return serveHTTPS(ctx, ln, emu, tlsConfig, cfg.Log) }}
	if cfg.Named {
		if nln, err := listenNamed(service, HTTPSPort); err != nil {
			d.NamedErr = err
		} else {
			d.Named = "https://" + service
			// A copy: http.Server adds its settings to the config it gets.
			ntls := tlsConfig.Clone()
			serve = append(serve, func(ctx context.Context) error { return serveHTTPS(ctx, nln, emu, ntls, cfg.Log) })
		}
	}
	d.serving = startServing(serve...)
	if err := atomicfile.WriteFile(filepath.Join(stateDir, DPSEndpointFile), []byte(d.Endpoint+"\n"), 0o644); err != nil {
		d.Close()
		return nil, err
	}
	return d, nil
}

// HubConfig says how StartHub serves.
type HubConfig struct {
	// MQTT and Service are the addresses of MQTT over TLS and of the
	// service API over HTTPS; default 127.0.0.1 on free ports.
	MQTT, Service string
	// Hub is the IoT hub's host name; default Hub.
	Hub string
	// Gateway is the edge device's host name; default GatewayHostName().
	Gateway string
	// Routes are edgeHub's routes; default every module output to
	// $upstream.
	Routes map[string]string
	// Named also serves the service API at the hub's host name: on port
	// 443 of its LoopbackAddr, where Azure's service SDKs reach it from
	// the iothubowner connection string alone once the name resolves
	// there (lab hosts). When that port cannot be bound, the emulator
	// serves without it and HubEmulator.NamedErr says why.
	Named bool
	Log   zerolog.Logger
}

// HubEmulator is the lab's IoT Hub and edgeHub emulator, served. Close
// stops it.
type HubEmulator struct {
	*hubemu.Server
	// MQTT is the host:port of MQTT over TLS, Service the base URL of the
	// service API.
	MQTT, Service string
	// Named is https:// and the hub's host name when HubConfig.Named
	// served the service API there; NamedErr is why not, when it did not.
	Named    string
	NamedErr error
	*serving
}

// StartHub serves the lab's hub emulator: MQTT over TLS, as edgeHub and
// IoT Hub, and the service API over HTTPS (also at the hub's name with
// cfg.Named), both with the lab CA's
// certificate for the gateway, the hub, localhost and 127.0.0.1. Device
// keys come from the registry the lab's DPS fills; module identities are
// made through the hub's module registry, as IoT Edge makes them. It
// writes its endpoints, and the iothubowner connection string (0600), into
// the state folder.
func StartHub(stateDir string, ca *pki.CA, cfg HubConfig) (*HubEmulator, error) {
	if cfg.Hub == "" {
		cfg.Hub = Hub
	}
	if cfg.Gateway == "" {
		cfg.Gateway = GatewayHostName()
	}
	if len(cfg.Routes) == 0 {
		cfg.Routes = map[string]string{"upstream": "FROM /messages/* INTO $upstream"}
	}
	emu, err := newHub(stateDir, cfg.Hub, cfg.Gateway, cfg.Routes, cfg.Log)
	if err != nil {
		return nil, err
	}
	tlsConfig, err := ca.ServerTLS(cfg.Gateway, cfg.Hub, "localhost", "127.0.0.1")
	if err != nil {
		return nil, err
	}
	ln, err := listen(cfg.MQTT)
	if err != nil {
		return nil, fmt.Errorf("hub: %w", err)
	}
	sln, err := listen(cfg.Service)
	if err != nil {
		ln.Close()
		return nil, fmt.Errorf("hub service API: %w", err)
	}
	h := &HubEmulator{Server: emu, MQTT: ln.Addr().String(), Service: "https://" + sln.Addr().String()}
	// Copies: http.Server adds its settings to the config it gets.
	stls := tlsConfig.Clone()
	serve := []func(context.Context) error{
		func(ctx context.Context) error {
			if err := emu.Serve(ctx, ln, tlsConfig); err != nil {
				return fmt.Errorf("serve MQTT: %w", err)
			}
			return nil
		},
		func(ctx context.Context) error { return serveHTTPS(ctx, sln, emu.ServiceHandler(), stls, cfg.Log) },
	}
	if cfg.Named {
		if nln, err := listenNamed(cfg.Hub, HTTPSPort); err != nil {
			h.NamedErr = err
		} else {
			h.Named = "https://" + cfg.Hub
			ntls := tlsConfig.Clone()
			serve = append(serve, func(ctx context.Context) error { return serveHTTPS(ctx, nln, emu.ServiceHandler(), ntls, cfg.Log) })
		}
	}
	h.serving = startServing(serve...)
	for name, v := range map[string]string{HubEndpointFile: h.MQTT, HubServiceFile: h.Service} {
		if err := atomicfile.WriteFile(filepath.Join(stateDir, name), []byte(v+"\n"), 0o644); err != nil {
			h.Close()
			return nil, err
		}
	}
	return h, nil
}

// WorkloadAPI is the workload API of one device's modules, served on a
// unix socket. Close stops it and removes the socket.
type WorkloadAPI struct {
	Socket string
	*serving
}

// socketWait bounds the wait for the workload socket to accept.
const socketWait = 10 * time.Second

// StartWorkload serves the workload API on socket for the module
// identities mods, with their keys, and server certificates from the lab
// CA. It returns once the socket accepts connections.
func StartWorkload(socket string, ca *pki.CA, mods []ModuleIdentity, logger zerolog.Logger) (*WorkloadAPI, error) {
	keys := map[string][]byte{}
	for _, m := range mods {
		keys[m.ModuleID] = m.Key
	}
	emu, err := workloademu.New(workloademu.Config{
		Key: func(module string) ([]byte, bool) { k, ok := keys[module]; return k, ok },
		CA:  ca,
		Log: logger,
	})
	if err != nil {
		return nil, err
	}
	w := &WorkloadAPI{Socket: socket}
	w.serving = startServing(func(ctx context.Context) error { return emu.Serve(ctx, socket) })
	deadline := time.Now().Add(socketWait)
	for {
		c, err := net.Dial("unix", socket)
		if err == nil {
			c.Close()
			return w, nil
		}
		select {
		case <-w.Done():
			return nil, fmt.Errorf("workload API: %w", w.Close())
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			w.Close()
			return nil, fmt.Errorf("workload API: %s does not accept connections after %v", socket, socketWait)
		}
	}
}
