package main

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/edgetpm/edgetpm/internal/testharness/until"
)

// startPlant is a plant for the relay of e, taking messages.
func startPlant(t *testing.T, e *edge, desired string) *plant {
	t.Helper()
	p := newPlant(t, e.hub, 100, desired)
	p.waitUp(t)
	return p
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
	want := p.publish(t, 8000, 100, 60*time.Millisecond) // about six seconds
	close(stop)
	wg.Wait()
	until.True(t, "every reading upstream", func() bool {
		got, _ := arrived(t, e.hub)
		return missing(want, got) == 0
	})
	_, dups := arrived(t, e.hub)
	var st stats
	until.True(t, "the relay's stats", func() bool {
		var ok bool
		st, ok = relayStats(t, e) // not while it reconnects
		return ok
	})
	if st.TokenRenewals < 2 {
		t.Errorf("%d token renewals in six seconds of 2 s tokens, want at least 2", st.TokenRenewals)
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
			metrics := freeAddr(t)
			e := startEdge(t, "--metrics-addr", metrics)
			p := startPlant(t, e, fmt.Sprintf(`,"queue":{"maxBytes":1048576,"whenFull":%q}`, policy))
			e.hub.RefuseConnects(time.Hour)
			e.hub.DropAll()
			want := p.publish(t, 6000, 100, 0) // about 2 MiB of records
			full := map[string]string{"backpressure": `edgerelay_intake_refused_total{reason="full"}`, "dropOldest": `edgerelay_queue_dropped_messages_total{reason="full"}`}[policy]
			until.True(t, "the queue full", func() bool { return scrape(t, metrics)[full] > 0 })
			e.hub.RefuseConnects(0)
			var got map[string]bool
			var st stats
			until.Within(t, 3*time.Minute, "the hub back and the queue drained", func() bool {
				got, _ = arrived(t, e.hub)
				var ok bool
				st, ok = relayStats(t, e)
				return ok && st.Queue.Depth == 0 && got[want[len(want)-1]]
			})
			missing := missing(want, got)
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
	metrics := freeAddr(t)
	e := startEdge(t, "--data", mnt, "--metrics-addr", metrics)
	p := startPlant(t, e, "")
	e.hub.RefuseConnects(time.Hour)
	e.hub.DropAll()
	want := p.publish(t, 40000, 100, 0) // about 14 MiB of records
	until.True(t, "the disk full", func() bool { return scrape(t, metrics)[`edgerelay_intake_refused_total{reason="error"}`] > 0 })
	e.hub.RefuseConnects(0)
	var st stats
	until.Within(t, 3*time.Minute, "the hub back and the queue drained", func() bool {
		var ok bool
		st, ok = relayStats(t, e)
		return ok && st.Queue.Depth == 0 && st.Sources["plc"].Queued >= int64(len(want))
	})
	got, dups := arrived(t, e.hub)
	if n := missing(want, got); n > 0 {
		t.Errorf("%d of %d readings never arrived", n, len(want))
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
