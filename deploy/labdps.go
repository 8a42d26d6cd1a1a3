package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"strings"
	"time"

	"github.com/edgetpm/edgetpm/deploy/lab"
	"github.com/edgetpm/edgetpm/internal/cli"
	"github.com/edgetpm/edgetpm/internal/emulator/dpsemu"
)

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
	names := fs.Bool("names", true, "also serve at the service host name, on port 443 of its address in 'lab hosts', when permitted")
	asJSON := fs.Bool("json", false, "print the endpoint line as JSON")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: edge-deploy lab dps [flags]\n\nServe a DPS emulator for TPM attestation over HTTPS.\n\n")
		fs.PrintDefaults()
	}
	if err := cli.Parse(fs, args, stdout); err != nil {
		return err
	}
	// The C SDK honours retry-after only within 1..300 s (docs/dps-protocol.md#registering-and-polling).
	if *retryAfter < 1 || *retryAfter > 300 {
		return cli.Usagef("--retry-after %d: want 1 to 300 seconds", *retryAfter)
	}
	if _, _, err := net.SplitHostPort(*listen); err != nil {
		return cli.Usagef("--listen %q: %v", *listen, err)
	}
	stateDir, ca, err := lab.OpenState(*dir)
	if err != nil {
		return err
	}
	d, err := lab.StartDPS(stateDir, ca, lab.DPSConfig{Listen: *listen, Hubs: hubs, RetryAfter: *retryAfter, Named: *names, Log: consoleLog(stderr)})
	if err != nil {
		return err
	}
	if *asJSON {
		json.NewEncoder(stdout).Encode(map[string]string{"endpoint": d.Endpoint, "named": d.Named, "idScope": d.IDScope(), "stateDir": stateDir})
	} else {
		fmt.Fprintf(stdout, "dps emulator at %s%s, id scope %s, state in %s\n", d.Endpoint, lab.NamedNote(d.Named, d.NamedErr), d.IDScope(), stateDir)
	}
	select {
	case <-ctx.Done():
	case <-d.Done():
	}
	return d.Close()
}
