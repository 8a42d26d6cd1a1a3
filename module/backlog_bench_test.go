package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/edgetpm/edgetpm/internal/emulator/hubemu"
	"github.com/edgetpm/edgetpm/internal/testharness/hubtest"
)

// BenchmarkBacklog is the outage the relay is for, end to end, with
// edge-relay as its own process so that its memory is its own: readings
// of 256 bytes go from a producer through Mosquitto into the relay while
// edgeHub is away, until 1,000,000 are queued; then edgeHub comes back and
// the backlog drains. Before that, the sustained rate: readings published
// while edgeHub is up. It reports the relay's peak resident memory, bytes
// on disk per queued reading, the sustained and drain rates (from the
// relay's reconnect to the last reading recorded upstream) and the one as
// a share of the other. Run with -benchtime=1x; the backlog size is
// $BACKLOG (default 1000000).
func BenchmarkBacklog(b *testing.B) {
	backlog := 1_000_000
	if v, err := strconv.Atoi(os.Getenv("BACKLOG")); err == nil && v > 0 {
		backlog = v
	}
	const sustained = 100_000
	hub := devHub(b)
	dir := b.TempDir()
	caFile := filepath.Join(dir, "ca.pem")
	writeFile(b, caFile, hub.CA.CertPEM())
	metrics := freeAddr(b)
	for b.Loop() {
		plc := newPlant(b, hub, 1000, "")
		p := startProcess(b, hub, filepath.Join(dir, fmt.Sprint("data-", time.Now().UnixNano())), caFile, "--metrics-addr", metrics)
		plc.waitUp(b)

		// Sustained: edgeHub up.
		before := len(hub.Upstream())
		start := time.Now()
		plc.publish(b, sustained, 5000, 0)
		ups, err := waitUpstream(b, hub, before+sustained)
		if err != nil {
			b.Fatal(err)
		}
		sustainedRate := sustained / lastReceived(ups[before:]).Sub(start).Seconds()

		// The outage: everything queues.
		hub.RefuseConnects(time.Hour)
		hub.DropAll()
		before = len(ups)
		plc.publish(b, backlog, 5000, 0)
		var peak float64
		for {
			st := scrape(b, metrics)
			peak = max(peak, residentOf(p.cmd.Process.Pid))
			if st["edgerelay_queue_depth_messages"] >= float64(backlog) {
				b.ReportMetric(st["edgerelay_queue_disk_bytes"]/float64(backlog), "disk-B/msg")
				break
			}
			time.Sleep(100 * time.Millisecond)
		}

		// edgeHub is back: the drain, from the reconnect on.
		hub.RefuseConnects(0)
		var back time.Time
		for !hub.Connected("edge1", "relay") {
			time.Sleep(10 * time.Millisecond)
		}
		back = time.Now()
		done := make(chan struct{})
		go func() {
			for {
				select {
				case <-done:
					return
				case <-time.After(100 * time.Millisecond):
					peak = max(peak, residentOf(p.cmd.Process.Pid))
				}
			}
		}()
		ups, err = waitUpstream(b, hub, before+backlog)
		close(done)
		if err != nil {
			b.Fatal(err)
		}
		drainRate := float64(backlog) / lastReceived(ups[before:]).Sub(back).Seconds()
		p.kill()

		b.ReportMetric(sustainedRate, "sustained-msgs/s")
		b.ReportMetric(drainRate, "drain-msgs/s")
		b.ReportMetric(drainRate/sustainedRate*100, "%-of-sustained")
		b.ReportMetric(peak/(1<<20), "peak-RSS-MB")
	}
}

func waitUpstream(b *testing.B, hub *hubtest.Server, n int) ([]hubemu.Message, error) {
	ctx, cancel := context.WithTimeout(b.Context(), 15*time.Minute)
	defer cancel()
	return hub.WaitUpstream(ctx, n)
}

func lastReceived(ms []hubemu.Message) time.Time {
	var last time.Time
	for _, m := range ms {
		if m.Received.After(last) {
			last = m.Received
		}
	}
	return last
}

// residentOf reads a process's resident set size in bytes; 0 when it is
// gone.
func residentOf(pid int) float64 {
	v, _ := procStatus(pid, "VmRSS:")
	return v
}
