package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/edgetpm/edgetpm/internal/hubemu"
	"github.com/edgetpm/edgetpm/internal/hubemu/hubtest"
	"github.com/edgetpm/edgetpm/internal/mosquittotest"
)

var buildOnce = sync.OnceValues(func() (string, error) {
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

func startProcess(t *testing.T, hub *hubtest.Server, data, caFile string) *process {
	t.Helper()
	bin, err := buildOnce()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "--data", data, "--metrics-addr", "127.0.0.1:0")
	cmd.Env = append(os.Environ(),
		"EdgeHubConnectionString=HostName="+hub.HubHostName()+";GatewayHostName="+hub.GatewayHostName()+
			";DeviceId=edge1;ModuleId=relay;SharedAccessKey="+base64.StdEncoding.EncodeToString(relayKey),
		"EdgeModuleCACertificateFile="+caFile,
		"EDGE_RELAY_HUB_ADDRESS="+hub.Addr,
	)
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
	hub := hubtest.Start(t, hubemu.Config{
		Key:    hubtest.Keys(map[string][]byte{"edge1/relay": relayKey}),
		Routes: map[string]string{"up": "FROM /messages/modules/relay/outputs/* INTO $upstream"},
	})
	// Mosquitto keeps every message for the relay's session while it is
	// down (its default stops at 1000).
	br := mosquittotest.Start(t, mosquittotest.Options{Extra: []string{"max_queued_messages 0", "max_inflight_messages 100"}})
	desired := fmt.Sprintf(`{"sources":{"plc":{"url":%q,"topics":{"plant":{"filter":"plant/#","qos":1}}}}}`, br.URL)
	if _, err := hub.UpdateDesired("edge1", "relay", json.RawMessage(desired)); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	caFile := filepath.Join(dir, "ca.pem")
	writeFile(t, caFile, hub.CA.CertPEM())
	data := filepath.Join(dir, "data")

	// The producer publishes in bursts until stopped; published holds
	// what Mosquitto acknowledged, in order.
	prod := mosquittotest.NewProducer(t, br)
	var published []string
	stopProducing := make(chan struct{})
	produced := make(chan struct{})
	produce := func() {
		defer close(produced)
		for n := 0; ; {
			select {
			case <-stopProducing:
				return
			default:
			}
			var toks []mqtt.Token
			var bodies []string
			for range 50 {
				body := fmt.Sprintf("plc-%06d", n)
				n++
				toks = append(toks, prod.Client.Publish("plant/line1", 1, false, body))
				bodies = append(bodies, body)
			}
			for i, tok := range toks {
				if tok.WaitTimeout(5*time.Second) && tok.Error() == nil {
					published = append(published, bodies[i])
				}
			}
			time.Sleep(10 * time.Millisecond)
		}
	}

	const rounds, perRound = 5, 200
	ctx := t.Context()
	var inputs []string
	for round := range rounds {
		p := startProcess(t, hub, data, caFile)
		if round == 0 {
			// Mosquitto keeps messages for the relay's session once it has
			// subscribed: the producer starts then.
			for i := 0; ; i++ {
				prod.Publish("plant/probe", fmt.Sprintf("probe-%d", i))
				ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
				_, err := hub.WaitUpstream(ctx, 1)
				cancel()
				if err == nil {
					break
				}
				if i == 100 {
					t.Fatalf("the relay never took a message from Mosquitto\n%s", p.log.String())
				}
			}
			go produce()
		}
		for i := range perRound {
			id := fmt.Sprintf("r%d-%03d", round, i)
			if err := hub.SendToInput(ctx, "edge1", "relay", "readings", hubemu.Message{Body: []byte(id), System: map[string]string{"$.mid": id}}); err != nil {
				t.Fatal(err)
			}
			inputs = append(inputs, id)
		}
		time.Sleep(time.Duration(200+rand.IntN(400)) * time.Millisecond)
		p.kill()
	}
	p := startProcess(t, hub, data, caFile)
	defer p.kill()
	time.Sleep(300 * time.Millisecond) // the producer goes on while the last one starts
	close(stopProducing)
	<-produced

	want := append(slices.Clone(inputs), published...)
	deadline := time.Now().Add(60 * time.Second)
	for {
		ups := hub.Upstream()
		mids := map[string]string{} // body → $.mid
		var order []string          // the source's bodies, first arrivals
		var dups, missing int
		for _, m := range ups {
			body, mid := string(m.Body), m.System["$.mid"]
			if prev, ok := mids[body]; ok {
				dups++
				if prev != mid {
					t.Fatalf("%s arrived with $.mid %s and again with %s", body, prev, mid)
				}
				continue
			}
			mids[body] = mid
			if strings.HasPrefix(body, "plc-") {
				order = append(order, body)
			}
		}
		var lost []string
		for _, b := range want {
			if _, ok := mids[b]; !ok {
				missing++
				lost = append(lost, b)
			}
		}
		if missing == 0 {
			if !slices.IsSorted(order) {
				t.Errorf("the source's messages arrived out of order")
			}
			t.Logf("%d edgeHub inputs and %d Mosquitto messages after %d kills: %d deliveries upstream, %d duplicates",
				len(inputs), len(published), rounds, len(ups), dups)
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d messages never arrived upstream (%s … %s)\nlast log:\n%s", missing, len(want), lost[0], lost[len(lost)-1], p.log.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
}
