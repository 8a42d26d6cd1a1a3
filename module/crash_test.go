package main

import (
	"encoding/base64"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/edgetpm/edgetpm/internal/hubemu"
	"github.com/edgetpm/edgetpm/internal/hubemu/hubtest"
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

// Kill -9 under load, five times: every message edgeHub handed to the
// relay (and so saw acknowledged, or will redeliver) arrives upstream;
// duplicates carry the same $.mid.
func TestKillUnderLoad(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and kills the module")
	}
	hub := hubtest.Start(t, hubemu.Config{
		Key:    hubtest.Keys(map[string][]byte{"edge1/relay": relayKey}),
		Routes: map[string]string{"up": "FROM /messages/modules/relay/outputs/* INTO $upstream"},
	})
	dir := t.TempDir()
	caFile := filepath.Join(dir, "ca.pem")
	writeFile(t, caFile, hub.CA.CertPEM())
	data := filepath.Join(dir, "data")

	const rounds, perRound = 5, 200
	ctx := t.Context()
	for round := range rounds {
		p := startProcess(t, hub, data, caFile)
		for i := range perRound {
			id := fmt.Sprintf("r%d-%03d", round, i)
			if err := hub.SendToInput(ctx, "edge1", "relay", "readings", hubemu.Message{Body: []byte(id), System: map[string]string{"$.mid": id}}); err != nil {
				t.Fatal(err)
			}
		}
		time.Sleep(time.Duration(200+rand.IntN(400)) * time.Millisecond)
		p.kill()
	}
	p := startProcess(t, hub, data, caFile)
	defer p.kill()

	want := rounds * perRound
	deadline := time.Now().Add(60 * time.Second)
	for {
		seen := map[string]int{}
		for _, m := range hub.Upstream() {
			seen[m.System["$.mid"]]++
		}
		missing := 0
		for round := range rounds {
			for i := range perRound {
				if seen[fmt.Sprintf("r%d-%03d", round, i)] == 0 {
					missing++
				}
			}
		}
		if missing == 0 {
			t.Logf("%d messages, %d deliveries upstream after %d kills", want, len(hub.Upstream()), rounds)
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d messages never arrived upstream\nlast log:\n%s", missing, want, p.log.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
}
