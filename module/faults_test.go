package main

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/edgetpm/edgetpm/internal/mosquittotest"
)

// plant is a Mosquitto configured as the relay's source "plc" through the
// twin, with a producer that has seen a message through.
type plant struct {
	br   *mosquittotest.Broker
	prod *mosquittotest.Producer
}

func startPlant(t *testing.T, e *edge, desired string) *plant {
	t.Helper()
	br := mosquittotest.Start(t, mosquittotest.Options{Extra: []string{"max_queued_messages 0", "max_inflight_messages 100"}})
	doc := fmt.Sprintf(`{"sources":{"plc":{"url":%q,"topics":{"plant":{"filter":"plant/#","qos":1}}}}%s}`, br.URL, desired)
	if _, err := e.hub.UpdateDesired("edge1", "relay", json.RawMessage(doc)); err != nil {
		t.Fatal(err)
	}
	p := &plant{br, mosquittotest.NewProducer(t, br)}
	// Mosquitto keeps messages for the relay once it has subscribed. Once
	// a probe is through, a last one follows every probe before it (order
	// holds per source): then nothing of the probes is left in the queue.
	arrived := func(body string) bool {
		for _, m := range e.hub.Upstream() {
			if string(m.Body) == body {
				return true
			}
		}
		return false
	}
	probes := 0
	waitFor(t, "the relay to take a message from Mosquitto", func() bool {
		probes++
		body := fmt.Sprintf("probe-%d", probes)
		p.prod.Publish("plant/probe", body)
		time.Sleep(100 * time.Millisecond)
		return arrived(body)
	})
	p.prod.Publish("plant/probe", "probe-last")
	waitFor(t, "the last probe through", func() bool { return arrived("probe-last") })
	return p
}

// publish sends n 256-byte readings in bursts, returning those Mosquitto
// acknowledged, in order.
func (p *plant) publish(t *testing.T, n int, pause time.Duration) []string {
	pad := strings.Repeat(".", 256-len("plc-000000 "))
	var acked []string
	for i := 0; i < n; {
		var toks []mqtt.Token
		var bodies []string
		for ; i < n && len(toks) < 100; i++ {
			body := fmt.Sprintf("plc-%06d %s", i, pad)
			toks = append(toks, p.prod.Client.Publish("plant/line1", 1, false, body))
			bodies = append(bodies, body)
		}
		for j, tok := range toks {
			if tok.WaitTimeout(5*time.Second) && tok.Error() == nil {
				acked = append(acked, bodies[j])
			}
		}
		time.Sleep(pause)
	}
	if len(acked) < n {
		t.Logf("Mosquitto acknowledged %d of %d", len(acked), n)
	}
	return acked
}

// arrived checks what reached the hub: each body once at least, under one
// $.mid, the readings first arriving in order; it returns the readings
// that arrived and how many deliveries were duplicates.
func arrived(t *testing.T, e *edge) (readings map[string]bool, dups int) {
	t.Helper()
	mids := map[string]string{}
	var order []string
	for _, m := range e.hub.Upstream() {
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
	if !slices.IsSorted(order) {
		t.Fatal("readings arrived out of order")
	}
	readings = map[string]bool{}
	for _, b := range order {
		readings[b] = true
	}
	return readings, dups
}

// relayStats calls the stats direct method; ok is false while the relay
// is not connected.
func relayStats(t *testing.T, e *edge) (st stats, ok bool) {
	t.Helper()
	status, resp, err := e.hub.InvokeMethod(t.Context(), "edge1", "relay", "stats", nil, 5*time.Second)
	if err != nil || status != 200 {
		return stats{}, false
	}
	if err := json.Unmarshal(resp, &st); err != nil {
		t.Fatal(err)
	}
	return st, true
}

// Under load for six seconds, with tokens that live two seconds and an
// edgeHub that drops every connection at 1 s and, at 3.5 s, drops them
// again and refuses new ones for half a second: every reading Mosquitto
// acknowledged arrives, in order, duplicates under one $.mid.
func TestFaultsUnderLoad(t *testing.T) {
	if testing.Short() {
		t.Skip("runs for several seconds")
	}
	e := startEdge(t, "--token-ttl", "2s")
	p := startPlant(t, e, "")
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for _, at := range []time.Duration{time.Second, 2500 * time.Millisecond} {
			select {
			case <-stop:
				return
			case <-time.After(at):
			}
			if at > time.Second {
				e.hub.RefuseConnects(500 * time.Millisecond)
			}
			e.hub.DropAll()
		}
	})
	want := p.publish(t, 8000, 60*time.Millisecond) // about six seconds
	close(stop)
	wg.Wait()
	waitFor(t, "every reading upstream", func() bool {
		got, _ := arrived(t, e)
		for _, b := range want {
			if !got[b] {
				return false
			}
		}
		return true
	})
	_, dups := arrived(t, e)
	st, _ := relayStats(t, e)
	if st.TokenRenewals < 2 {
		t.Errorf("%d token renewals in six seconds of 3 s tokens, want at least 2", st.TokenRenewals)
	}
	t.Logf("%d readings through %d token renewals and dropped connections; %d duplicates", len(want), st.TokenRenewals, dups)
}

// With edgeHub away and a 1 MiB queue, the policy holds: backpressure
// keeps every reading (Mosquitto holds what the queue cannot), dropOldest
// keeps the newest and counts exactly what it dropped.
func TestQueueFull(t *testing.T) {
	if testing.Short() {
		t.Skip("runs for several seconds")
	}
	for _, policy := range []string{"backpressure", "dropOldest"} {
		t.Run(policy, func(t *testing.T) {
			e := startEdge(t)
			p := startPlant(t, e, fmt.Sprintf(`,"queue":{"maxBytes":1048576,"whenFull":%q}`, policy))
			e.hub.RefuseConnects(3 * time.Second)
			e.hub.DropAll()
			want := p.publish(t, 6000, 0) // about 2 MiB of records
			var got map[string]bool
			var st stats
			waitFor(t, "the hub back and the queue drained", func() bool {
				got, _ = arrived(t, e)
				var ok bool
				st, ok = relayStats(t, e)
				return ok && st.Queue.Depth == 0 && got[want[len(want)-1]]
			})
			missing := 0
			for _, b := range want {
				if !got[b] {
					missing++
				}
			}
			switch policy {
			case "backpressure":
				if missing != 0 || st.Queue.Dropped["full"] != 0 || st.Sources["plc"].Backpressured == 0 {
					t.Errorf("backpressure lost %d readings, dropped %d, held back %d appends", missing, st.Queue.Dropped["full"], st.Sources["plc"].Backpressured)
				}
			case "dropOldest":
				if int64(missing) != st.Queue.Dropped["full"] || missing == 0 {
					t.Errorf("%d readings missing, %d counted as dropped", missing, st.Queue.Dropped["full"])
				}
			}
			if st.Queue.Corrupt != 0 {
				t.Errorf("%d corrupt records", st.Queue.Corrupt)
			}
			t.Logf("%s: %d readings, %d dropped, %d backpressured appends", policy, len(want), st.Queue.Dropped["full"], st.Sources["plc"].Backpressured)
		})
	}
}

// With the data folder on a full disk (an 8 MiB tmpfs) and edgeHub away,
// intake stops acknowledging with a clear error; once edgeHub is back the
// queue drains, its space comes back, intake resumes, and every reading
// Mosquitto acknowledged arrives.
func TestDiskFull(t *testing.T) {
	if testing.Short() {
		t.Skip("runs for several seconds")
	}
	if os.Geteuid() != 0 {
		t.Skip("mounting a tmpfs needs root")
	}
	mnt := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", mnt).CombinedOutput(); err != nil {
		t.Skipf("mount tmpfs: %v: %s", err, out)
	}
	t.Cleanup(func() {
		if err := syscall.Unmount(mnt, 0); err != nil {
			t.Errorf("unmount %s: %v", mnt, err)
		}
	})
	e := startEdge(t, "--data", mnt)
	p := startPlant(t, e, "")
	e.hub.RefuseConnects(4 * time.Second)
	e.hub.DropAll()
	want := p.publish(t, 40000, 0) // about 14 MiB of records
	var st stats
	waitFor(t, "the hub back and the queue drained", func() bool {
		var ok bool
		st, ok = relayStats(t, e)
		return ok && st.Queue.Depth == 0 && st.Sources["plc"].Queued >= int64(len(want))
	})
	got, dups := arrived(t, e)
	missing := 0
	for _, b := range want {
		if !got[b] {
			missing++
		}
	}
	if missing > 0 {
		t.Errorf("%d of %d readings never arrived", missing, len(want))
	}
	if !strings.Contains(st.Sources["plc"].LastError, "no space left on device") {
		t.Errorf("source's last error %q, want the full disk named", st.Sources["plc"].LastError)
	}
	dropped := int64(0)
	for _, n := range st.Queue.Dropped {
		dropped += n
	}
	if st.Queue.Corrupt != 0 || dropped != 0 {
		t.Errorf("queue after a full disk: %d corrupt, %d dropped", st.Queue.Corrupt, dropped)
	}
	t.Logf("%d readings through a full 8 MiB disk; %d duplicates", len(want), dups)
}
