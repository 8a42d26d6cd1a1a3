package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/edgetpm/edgetpm/deploy/lab"
	"github.com/edgetpm/edgetpm/internal/atomicfile"
	"github.com/edgetpm/edgetpm/internal/cli"
	"github.com/edgetpm/edgetpm/internal/emulator/dpsemu"
)

// shutdownTimeout bounds the wait for requests in flight on exit.
const shutdownTimeout = 5 * time.Second

// hubFlag collects repeated --hub HOST[=LATENCY] values.
type hubFlag []dpsemu.Hub

func (h *hubFlag) String() string {
	var names []string
	for _, hub := range *h {
		names = append(names, hub.HostName)
	}
	return strings.Join(names, ",")
}

func (h *hubFlag) Set(v string) error {
	host, lat, hasLatency := strings.Cut(v, "=")
	hub := dpsemu.Hub{HostName: host}
	if hasLatency {
		d, err := time.ParseDuration(lat)
		if err != nil || d < 0 {
			return fmt.Errorf("latency %q is not a duration", lat)
		}
		hub.Latency = d
	}
	if host == "" {
		return errors.New("empty hub host name")
	}
	*h = append(*h, hub)
	return nil
}

// labDPS serves the DPS emulator until ctx ends. Everything that makes its
// identity (CA, ID scope, service key, enrollments, devices) lives in the
// state folder, so a restart with the same folder continues where it was.
func labDPS(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("edge-deploy lab dps", flag.ContinueOnError)
	listen := fs.String("listen", "127.0.0.1:8443", "`address` to serve HTTPS on")
	dir := fs.String("state-dir", "./lab-state", "`folder` for the CA, the emulator state and the device registry")
	var hubs hubFlag
	fs.Var(&hubs, "hub", "linked IoT hub `host[=latency]`; repeatable (default "+dpsemu.DefaultHub+")")
	retryAfter := fs.Int("retry-after", dpsemu.DefaultRetryAfter, "`seconds` sent in retry-after while assigning")
	asJSON := fs.Bool("json", false, "print the endpoint line as JSON")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: edge-deploy lab dps [flags]\n\nServe a DPS emulator for TPM attestation over HTTPS.\n\n")
		fs.PrintDefaults()
	}
	if err := cli.Parse(fs, args, stdout); err != nil {
		return err
	}
	// The C SDK honours retry-after only within 1..300 s (dps-tpm.md §8.2).
	if *retryAfter < 1 || *retryAfter > 300 {
		return cli.Usagef("--retry-after %d: want 1 to 300 seconds", *retryAfter)
	}
	host, _, err := net.SplitHostPort(*listen)
	if err != nil {
		return cli.Usagef("--listen %q: %v", *listen, err)
	}
	stateDir, ca, err := lab.OpenState(*dir)
	if err != nil {
		return err
	}
	names := []string{"localhost", "127.0.0.1", "::1"}
	if ip := net.ParseIP(host); host != "" && !slices.Contains(names, host) && (ip == nil || !ip.IsUnspecified()) {
		names = append(names, host)
	}
	tlsConfig, err := ca.ServerTLS(names...)
	if err != nil {
		return err
	}
	logger := consoleLog(stderr)
	emu, err := lab.NewDPS(stateDir, hubs, *retryAfter, logger)
	if err != nil {
		return err
	}

	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	// HTTP/1.1 only: the SDKs' device clients speak it (dps-tpm.md §2.3),
	// and the reset fault needs a connection it can cut mid-response.
	var protocols http.Protocols
	protocols.SetHTTP1(true)
	srv := &http.Server{
		Handler:           emu,
		TLSConfig:         tlsConfig,
		Protocols:         &protocols,
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          log.New(logger, "", 0),
	}
	served := make(chan error, 1)
	go func() { served <- srv.ServeTLS(ln, "", "") }()

	endpoint := "https://" + ln.Addr().String()
	if err := atomicfile.WriteFile(filepath.Join(stateDir, lab.DPSEndpointFile), []byte(endpoint+"\n"), 0o644); err != nil {
		srv.Close()
		return err
	}
	if *asJSON {
		json.NewEncoder(stdout).Encode(map[string]string{"endpoint": endpoint, "idScope": emu.IDScope(), "stateDir": stateDir})
	} else {
		fmt.Fprintf(stdout, "dps emulator at %s, id scope %s, state in %s\n", endpoint, emu.IDScope(), stateDir)
	}

	select {
	case err := <-served:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), shutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		return fmt.Errorf("shut down: %w", err)
	}
	if err := <-served; !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serve: %w", err)
	}
	return nil
}
