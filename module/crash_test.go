package main

import (
	"encoding/base64"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/edgetpm/edgetpm/internal/emulator/hubemu"
	"github.com/edgetpm/edgetpm/internal/testharness/hubtest"
)

// buildOnce builds edge-relay, or takes $EDGE_RELAY_BIN, another build
// (a benchmark's before).
var buildOnce = sync.OnceValues(func() (string, error) {
	if bin := os.Getenv("EDGE_RELAY_BIN"); bin != "" {
		return bin, nil
	}
	dir, err := os.MkdirTemp("", "edge-relay-bin")
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "edge-relay")
	out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("go build: %v\n%s", err, out)
	}
	return bin, nil
})

// process is edge-relay as its own process, in development mode against
// the hub emulator, so it can be killed with SIGKILL.
type process struct {
	cmd *exec.Cmd
	log *syncBuffer
}

func startProcess(t testing.TB, hub *hubtest.Server, data, caFile string, args ...string) *process {
	t.Helper()
	return spawnRelay(t, append([]string{"--data", data}, args...),
		"EdgeHubConnectionString=HostName="+hub.HubHostName()+";GatewayHostName="+hub.GatewayHostName()+
			";DeviceId=edge1;ModuleId=relay;SharedAccessKey="+base64.StdEncoding.EncodeToString(relayKey),
		"EdgeModuleCACertificateFile="+caFile,
		"EDGE_RELAY_HUB_ADDRESS="+hub.Addr,
	)
}

// spawnRelay starts edge-relay as its own process with args (a free
// metrics address, and a data folder in a temporary one unless args give
// --data) and env added to this process's environment.
func spawnRelay(t testing.TB, args []string, env ...string) *process {
	t.Helper()
	bin, err := buildOnce()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, append([]string{"--data", filepath.Join(t.TempDir(), "data"), "--metrics-addr", "127.0.0.1:0"}, args...)...)
	cmd.Env = append(os.Environ(), env...)
	p := &process{cmd: cmd, log: &syncBuffer{}}
	cmd.Stdout, cmd.Stderr = p.log, p.log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.kill() })
	return p
}

func (p *process) kill() {
	if p.cmd.ProcessState == nil {
		p.cmd.Process.Signal(syscall.SIGKILL)
		p.cmd.Wait()
	}
}

// Kill -9 under load, five times, with both intakes busy: a producer
// publishing QoS 1 to a real Mosquitto that the relay takes as a source,
// and edgeHub routing messages to the relay's input. Every message
// Mosquitto acknowledged to the producer and every message edgeHub handed
// over arrives upstream; a message that arrives twice carries the same
// $.mid both times; the source's messages first arrive in the order they
// were published.
func TestKillUnderLoad(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and kills the module")
	}
	data := filepath.Join(t.TempDir(), "data")
	n := crashUnderLoad(t, data, 5, 200, true,
		func(int) time.Duration { return time.Duration(200+rand.IntN(400)) * time.Millisecond },
		func(_ int, p *process) { p.kill() })
	t.Logf("%d edgeHub inputs and %d Mosquitto messages after 5 kills: %d deliveries upstream, %d duplicates", n.inputs, n.published, n.upstream, n.dups)
}

// delivered counts what crashUnderLoad sent and what arrived.
type delivered struct{ inputs, published, upstream, dups int }

// crashUnderLoad runs the relay on data with both intakes busy: a
// producer publishing QoS 1 to a real Mosquitto the relay takes as a
// source, and edgeHub routing perRound messages to the relay's input each
// round. After each round's inputs and pause(round), crash ends the relay
// as the test's failure does. Then the relay runs once more, and every
// message Mosquitto acknowledged and every message edgeHub handed over
// must arrive upstream within a minute. With strict, a message that
// arrives twice must also carry the same $.mid and the source's messages
// first arrive in order: true across kill -9, where the page cache keeps
// what the queue wrote, but not across a power cut, which may take a
// reading the relay sent before the queue made it durable; Mosquitto then
// delivers it again, and it goes up again as a new message.
func crashUnderLoad(t *testing.T, data string, rounds, perRound int, strict bool, pause func(round int) time.Duration, crash func(round int, p *process)) delivered {
	t.Helper()
	hub := devHub(t)
	plc := newPlant(t, hub, 100, "")
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	writeFile(t, caFile, hub.CA.CertPEM())

	// The producer publishes in bursts until stopped; published holds
	// what Mosquitto acknowledged, in order.
	var published []string
	stopProducing := make(chan struct{})
	produced := make(chan struct{})
	produce := func() {
		defer close(produced)
		for {
			select {
			case <-stopProducing:
				return
			default:
			}
			published = append(published, plc.publish(t, 50, 50, 10*time.Millisecond)...)
		}
	}

	ctx := t.Context()
	var inputs []string
	for round := range rounds {
		p := startProcess(t, hub, data, caFile)
		if round == 0 {
			plc.waitUp(t)
			go produce()
		}
		for i := range perRound {
			id := fmt.Sprintf("r%d-%03d", round, i)
			if err := hub.SendToInput(ctx, "edge1", "relay", "readings", hubemu.Message{Body: []byte(id), System: map[string]string{"$.mid": id}}); err != nil {
				t.Fatal(err)
			}
			inputs = append(inputs, id)
		}
		time.Sleep(pause(round))
		crash(round, p)
	}
	p := startProcess(t, hub, data, caFile)
	defer p.kill()
	time.Sleep(300 * time.Millisecond) // the producer goes on while the last one starts
	close(stopProducing)
	<-produced

	want := append(slices.Clone(inputs), published...)
	deadline := time.Now().Add(60 * time.Second)
	for {
		got, dups := map[string]bool{}, 0
		if strict {
			got, dups = arrived(t, hub)
		}
		for _, m := range hub.Upstream() { // the inputs, which arrived does not track
			got[string(m.Body)] = true
		}
		n := missing(want, got)
		if n == 0 {
			return delivered{inputs: len(inputs), published: len(published), upstream: len(hub.Upstream()), dups: dups}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d messages never arrived upstream\nlast log:\n%s", n, len(want), p.log.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
}
