package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"time"

	"github.com/edgetpm/edgetpm/deploy/lab"
	"github.com/edgetpm/edgetpm/internal/atomicfile"
	"github.com/edgetpm/edgetpm/internal/cli"
	"github.com/edgetpm/edgetpm/internal/emulator/dpsemu"
	"github.com/edgetpm/edgetpm/internal/emulator/workloademu"
	"github.com/edgetpm/edgetpm/internal/registry"
)

// routeFlag collects repeated --route NAME=ROUTE values.
type routeFlag map[string]string

func (r routeFlag) String() string { return fmt.Sprint(len(r), " routes") }

func (r routeFlag) Set(v string) error {
	name, route, ok := strings.Cut(v, "=")
	if !ok || name == "" || route == "" {
		return errors.New("want NAME=FROM ... INTO ...")
	}
	r[name] = route
	return nil
}

// labHub serves the edgeHub/IoT Hub emulator until ctx ends: MQTT over TLS
// and the service API, with the lab CA and the device registry lab dps
// fills, so the devices DPS assigns can connect.
func labHub(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("edge-deploy lab hub", flag.ContinueOnError)
	listen := fs.String("listen", "127.0.0.1:8883", "`address` of MQTT over TLS")
	service := fs.String("service", "127.0.0.1:8444", "`address` of the service API over HTTPS")
	dir := fs.String("state-dir", "./lab-state", "the lab's state `folder` (CA and device registry, shared with lab dps)")
	hub := fs.String("hub", dpsemu.DefaultHub, "IoT hub `host` name")
	gateway := fs.String("gateway", "", "edge device `host` name modules connect to (default: the machine's)")
	routes := routeFlag{}
	fs.Var(routes, "route", "edgeHub route `NAME=FROM ... INTO ...`; repeatable (default: every module output to $upstream)")
	asJSON := fs.Bool("json", false, "print the endpoints as JSON")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: edge-deploy lab hub [flags]\n\nServe an edgeHub and IoT Hub emulator: MQTT over TLS and a service API.\n\n")
		fs.PrintDefaults()
	}
	if err := cli.Parse(fs, args, stdout); err != nil {
		return err
	}
	if *gateway == "" {
		*gateway = lab.GatewayHostName()
	}
	if len(routes) == 0 {
		routes["upstream"] = "FROM /messages/* INTO $upstream"
	}
	stateDir, ca, err := lab.OpenState(*dir)
	if err != nil {
		return err
	}
	tlsConfig, err := ca.ServerTLS(*gateway, *hub, "localhost", "127.0.0.1")
	if err != nil {
		return err
	}
	logger := consoleLog(stderr)
	emu, err := lab.NewHub(stateDir, *hub, *gateway, routes, logger)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	sln, err := net.Listen("tcp", *service)
	if err != nil {
		ln.Close()
		return fmt.Errorf("listen: %w", err)
	}
	// A copy: http.Server adds its HTTP/2 settings to the config it gets.
	srv := &http.Server{Handler: emu.ServiceHandler(), TLSConfig: tlsConfig.Clone(), ReadHeaderTimeout: 10 * time.Second}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	mqttDone := make(chan error, 1)
	go func() { mqttDone <- emu.Serve(ctx, ln, tlsConfig) }()
	httpDone := make(chan error, 1)
	go func() { httpDone <- srv.ServeTLS(sln, "", "") }()

	endpoint, serviceURL := ln.Addr().String(), "https://"+sln.Addr().String()
	for name, v := range map[string]string{lab.HubEndpointFile: endpoint, lab.HubServiceFile: serviceURL} {
		if err := atomicfile.WriteFile(filepath.Join(stateDir, name), []byte(v+"\n"), 0o644); err != nil {
			cancel()
			srv.Close()
			<-mqttDone
			return err
		}
	}
	if *asJSON {
		json.NewEncoder(stdout).Encode(map[string]string{"mqtt": endpoint, "service": serviceURL, "hub": *hub, "gateway": *gateway, "stateDir": stateDir})
	} else {
		fmt.Fprintf(stdout, "hub emulator: MQTT at %s (hub %s, gateway %s), service API at %s, state in %s\n", endpoint, *hub, *gateway, serviceURL, stateDir)
	}

	var err2 error
	select {
	case err2 = <-mqttDone:
		err2 = fmt.Errorf("serve MQTT: %w", err2)
		srv.Close()
		<-httpDone
		return err2
	case err2 = <-httpDone:
		cancel()
		<-mqttDone
		return fmt.Errorf("serve the service API: %w", err2)
	case <-ctx.Done():
	}
	sctx, scancel := context.WithTimeout(context.WithoutCancel(ctx), shutdownTimeout)
	defer scancel()
	srv.Shutdown(sctx)
	<-httpDone
	return <-mqttDone
}

// labWorkload serves the workload API for one device's modules until ctx
// ends, with module keys as the hub emulator derives them.
func labWorkload(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("edge-deploy lab workload", flag.ContinueOnError)
	socket := fs.String("socket", "./lab-state/workload.sock", "unix socket `path` to serve on")
	dir := fs.String("state-dir", "./lab-state", "the lab's state `folder` (CA and device registry)")
	hub := fs.String("hub", dpsemu.DefaultHub, "IoT hub `host` name")
	device := fs.String("device", "", "edge device `ID` whose modules are served (required)")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: edge-deploy lab workload --device ID [flags]\n\nServe the IoT Edge workload API for a device's modules.\n\n")
		fs.PrintDefaults()
	}
	if err := cli.Parse(fs, args, stdout); err != nil {
		return err
	}
	if *device == "" {
		return cli.Usagef("lab workload needs --device")
	}
	stateDir, ca, err := lab.OpenState(*dir)
	if err != nil {
		return err
	}
	lookup := registry.Lookup(filepath.Join(stateDir, lab.RegistryFile), *hub)
	if _, ok := lookup(*device, ""); !ok {
		return fmt.Errorf("device %q of %s is not in the lab's registry: register it through lab dps first", *device, *hub)
	}
	emu, err := workloademu.New(workloademu.Config{
		Key: func(module string) ([]byte, bool) { return lookup(*device, module) },
		CA:  ca,
		Log: consoleLog(stderr),
	})
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "workload API for %s's modules at unix://%s\n", *device, *socket)
	return emu.Serve(ctx, *socket)
}
