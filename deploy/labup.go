package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/edgetpm/edgetpm/deploy/lab"
	"github.com/edgetpm/edgetpm/internal/cli"
)

// defaultContainerd is where containerd listens on a host that runs it.
const defaultContainerd = "/run/containerd/containerd.sock"

// labUp runs the whole path, from a TPM to telemetry in IoT Hub, on this
// machine until --duration passes or ctx ends, then prints a summary.
func labUp(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("edge-deploy lab up", flag.ContinueOnError)
	dir := fs.String("state-dir", "./lab-state", "`folder` for the lab's CA, emulator state, config.toml, logs and the relay's queue")
	tpmURI := fs.String("tpm", "", "TPM `URI`, e.g. swtpm://127.0.0.1:2321 for a running swtpm, or swtpm to start one with its state in the state folder (default: the reference simulator, in this process)")
	containerd := fs.String("containerd", "", "containerd socket `ADDRESS` to run the relay in, or none for a local process (default: "+defaultContainerd+" when it exists and this runs as root)")
	bin := fs.String("bin", "", "`folder` with edge-provisioner and edge-relay (default: in the repository, build them from it; elsewhere, run the installed ones beside edge-deploy or on PATH)")
	broker := fs.String("broker", "", "the plant's MQTT `broker`: mosquitto or embedded (default: Mosquitto when installed, else embedded mochi-mqtt)")
	rate := fs.Float64("rate", 10, "the sensor's `readings` per second")
	duration := fs.Duration("duration", 0, "stop after this `duration` (default: run until interrupted)")
	names := fs.Bool("names", true, "also serve DPS and the hub's service API at their host names, on port 443 of their addresses in 'lab hosts', when permitted")
	asJSON := fs.Bool("json", false, "print the summary as JSON on stdout (progress goes to stderr)")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), `usage: edge-deploy lab up [flags]

Run the whole path on this machine, with no cloud account and no TPM chip:
a TPM, the DPS and IoT Hub emulators, edge-provisioner provisioning by TPM
attestation, an edge runtime stand-in running the edge-relay module, and a
sensor publishing to a local MQTT broker that the relay takes telemetry
from. At the end (--duration, Ctrl-C) it prints a summary.

`)
		fs.PrintDefaults()
	}
	if err := cli.Parse(fs, args, stdout); err != nil {
		return err
	}
	if *rate <= 0 || *rate > 10000 {
		return cli.Usagef("--rate %g: want 0 to 10000 readings per second", *rate)
	}
	switch *containerd {
	case "":
		if os.Geteuid() == 0 {
			if _, err := os.Stat(defaultContainerd); err == nil {
				*containerd = defaultContainerd
			}
		}
	case "none":
		*containerd = ""
	}
	progress := stdout
	if *asJSON {
		progress = stderr
	}
	start := time.Now()
	l, err := lab.Up(ctx, lab.Config{StateDir: *dir, TPM: *tpmURI, Containerd: *containerd, Bin: *bin, Broker: *broker, Rate: *rate, Progress: progress, Named: *names})
	if err != nil {
		return err
	}
	fmt.Fprintf(progress, "%-10s up in %v; try: edge-deploy lab twin set --state-dir %s logLevel=debug\n", "lab", time.Since(start).Round(time.Millisecond), *dir)
	if *duration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, *duration)
		defer cancel()
	}
	<-ctx.Done()
	// Shut down on a fresh context: ctx has ended.
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	drainErr := l.Drain(sctx, 10*time.Second)
	s := l.Summary(sctx)
	if err := l.Close(); err != nil {
		return fmt.Errorf("stop the lab: %w", err)
	}
	if *asJSON {
		json.NewEncoder(stdout).Encode(s)
	} else {
		fmt.Fprintf(stdout, `
registration ID       %s
assigned hub          %s
device ID             %s
messages published    %d
messages relayed      %d
messages acknowledged %d
messages upstream     %d
twin version applied  %d
relay restarts        %d
`, s.RegistrationID, s.AssignedHub, s.DeviceID, s.MessagesPublished, s.MessagesRelayed, s.MessagesAcknowledged, s.MessagesUpstream, s.TwinVersionApplied, s.RelayRestarts)
	}
	return drainErr
}
