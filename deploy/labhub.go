package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"

	"github.com/edgetpm/edgetpm/deploy/lab"
	"github.com/edgetpm/edgetpm/internal/cli"
	"github.com/edgetpm/edgetpm/internal/emulator/dpsemu"
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
	names := fs.Bool("names", true, "also serve the service API at the hub's host name, on port 443 of its address in 'lab hosts', when permitted")
	asJSON := fs.Bool("json", false, "print the endpoints as JSON")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: edge-deploy lab hub [flags]\n\nServe an edgeHub and IoT Hub emulator: MQTT over TLS and a service API.\n\n")
		fs.PrintDefaults()
	}
	if err := cli.Parse(fs, args, stdout); err != nil {
		return err
	}
	stateDir, ca, err := lab.OpenState(*dir)
	if err != nil {
		return err
	}
	h, err := lab.StartHub(stateDir, ca, lab.HubConfig{MQTT: *listen, Service: *service, Hub: *hub, Gateway: *gateway, Routes: routes, Named: *names, Log: consoleLog(stderr)})
	if err != nil {
		return err
	}
	if *asJSON {
		json.NewEncoder(stdout).Encode(map[string]string{"mqtt": h.MQTT, "service": h.Service, "named": h.Named, "hub": h.HubHostName(), "gateway": h.GatewayHostName(), "stateDir": stateDir})
	} else {
		fmt.Fprintf(stdout, "hub emulator: MQTT at %s (hub %s, gateway %s), service API at %s%s, state in %s\n", h.MQTT, h.HubHostName(), h.GatewayHostName(), h.Service, lab.NamedNote(h.Named, h.NamedErr), stateDir)
	}
	select {
	case <-ctx.Done():
	case <-h.Done():
	}
	return h.Close()
}

// labWorkload serves the workload API for one device's modules until ctx
// ends. As aziot-identityd does, it first makes each module's identity in
// the running lab hub, signed with the device's key (from the lab's
// registry: by hand, the lab stands in for the TPM), with keys derived
// from the module's generation.
func labWorkload(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("edge-deploy lab workload", flag.ContinueOnError)
	socket := fs.String("socket", "./lab-state/workload.sock", "unix socket `path` to serve on")
	dir := fs.String("state-dir", "./lab-state", "the lab's state `folder` (CA, device registry and the running lab hub's service API)")
	hub := fs.String("hub", dpsemu.DefaultHub, "IoT hub `host` name")
	device := fs.String("device", "", "edge device `ID` whose modules are served (required)")
	var modules moduleFlag
	fs.Var(&modules, "module", "module `ID` to make an identity for and serve; repeatable (default relay)")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: edge-deploy lab workload --device ID [flags]\n\nMake module identities in the running lab hub and serve the IoT Edge workload API for them.\n\n")
		fs.PrintDefaults()
	}
	if err := cli.Parse(fs, args, stdout); err != nil {
		return err
	}
	if *device == "" {
		return cli.Usagef("lab workload needs --device")
	}
	if len(modules) == 0 {
		modules = moduleFlag{lab.ModuleID}
	}
	stateDir, ca, err := lab.OpenState(*dir)
	if err != nil {
		return err
	}
	c, err := lab.DeviceClient(stateDir, *hub, *device)
	if err != nil {
		return err
	}
	var ids []lab.ModuleIdentity
	for _, m := range modules {
		id, err := lab.CreateModule(ctx, c, m)
		if err != nil {
			return err
		}
		ids = append(ids, id)
	}
	w, err := lab.StartWorkload(*socket, ca, ids, consoleLog(stderr))
	if err != nil {
		return err
	}
	for _, id := range ids {
		fmt.Fprintf(stdout, "module identity %s/%s, generation %s (IOTEDGE_MODULEGENERATIONID)\n", *device, id.ModuleID, id.GenerationID)
	}
	fmt.Fprintf(stdout, "workload API for %s's modules at unix://%s\n", *device, w.Socket)
	select {
	case <-ctx.Done():
	case <-w.Done():
	}
	return w.Close()
}

// moduleFlag collects repeated --module ID values.
type moduleFlag []string

func (m *moduleFlag) String() string { return strings.Join(*m, ",") }

func (m *moduleFlag) Set(v string) error {
	if v == "" {
		return errors.New("empty module ID")
	}
	*m = append(*m, v)
	return nil
}
