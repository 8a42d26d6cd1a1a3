package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// BenchmarkRelayCPU is what the relay costs per reading, with edge-relay
// as its own process so that its CPU and allocations are its own: 256-byte
// QoS 1 readings from a producer through Mosquitto into the relay (each
// queued and fsync'd before its PUBACK) and on to the hub emulator over
// TLS. After a warm-up of $READINGS/5, it sends $READINGS (default
// 100000) readings in one burst and reports the relay's CPU (utime+stime
// from /proc) per reading, its heap allocations per reading (the
// process's go_memstats_mallocs_total), its garbage collections per
// thousand readings, the rate from the first publish to the last reading
// recorded upstream, the relay's CPU share of that time and its peak
// resident memory (VmHWM). Run with
// -benchtime=1x (each iteration starts a fresh relay). The alternative it
// is held against, a Mosquitto bridge to the same emulator, is measured by
// the bridge benchmark. With $RELAY_PERF set, perf records the relay's
// profile during the measured burst into that file; $RELAY_GOGC and
// $RELAY_GOMAXPROCS are the relay's GOGC and GOMAXPROCS.
func BenchmarkRelayCPU(b *testing.B) {
	readings := 100_000
	if v, err := strconv.Atoi(os.Getenv("READINGS")); err == nil && v > 0 {
		readings = v
	}
	hub := devHub(b)
	dir := b.TempDir()
	caFile := filepath.Join(dir, "ca.pem")
	writeFile(b, caFile, hub.CA.CertPEM())
	// Read by the relay at its start, not by this process, which has
	// started already.
	if v := os.Getenv("RELAY_GOGC"); v != "" {
		b.Setenv("GOGC", v)
	}
	if v := os.Getenv("RELAY_GOMAXPROCS"); v != "" {
		b.Setenv("GOMAXPROCS", v)
	}
	for b.Loop() {
		metrics := freeAddr(b)
		plc := newPlant(b, hub, 1000, "")
		p := startProcess(b, hub, filepath.Join(dir, fmt.Sprint("data-", time.Now().UnixNano())), caFile, "--metrics-addr", metrics)
		plc.waitUp(b)
		pid := p.cmd.Process.Pid

		burst := func(n int) (time.Duration, float64, map[string]float64) {
			before := len(hub.Upstream())
			cpu0, st0 := cpuOf(b, pid), scrape(b, metrics)
			start := time.Now()
			if got := plc.publish(b, n, n, 0); len(got) != n {
				b.Fatalf("Mosquitto acknowledged %d of %d", len(got), n)
			}
			ups, err := waitUpstream(b, hub, before+n)
			if err != nil {
				b.Fatal(err)
			}
			wall := lastReceived(ups[before:]).Sub(start)
			cpu, st := cpuOf(b, pid)-cpu0, scrape(b, metrics)
			for k, v := range st {
				st[k] = v - st0[k]
			}
			return wall, cpu, st
		}
		burst(readings / 5) // warm-up: connections, buffers, heap size
		stopPerf := perfRecord(b, pid)
		wall, cpu, st := burst(readings)
		stopPerf()
		peakRSS := statusOf(b, pid, "VmHWM:")
		p.kill()

		b.ReportMetric(cpu/float64(readings)*1e6, "relay-cpu-µs/reading")
		b.ReportMetric(st["go_memstats_mallocs_total"]/float64(readings), "allocs/reading")
		b.ReportMetric(st["go_gc_duration_seconds_count"]/float64(readings)*1000, "GCs/1k-readings")
		b.ReportMetric(float64(readings)/wall.Seconds(), "readings/s")
		b.ReportMetric(cpu/wall.Seconds()*100, "relay-%-of-a-core")
		b.ReportMetric(peakRSS/(1<<20), "relay-peak-RSS-MB")
	}
}

// perfRecord records the relay's profile with perf when $RELAY_PERF
// names the file to write (perf report -i FILE), until the returned
// function is called.
func perfRecord(b *testing.B, pid int) func() {
	out := os.Getenv("RELAY_PERF")
	if out == "" {
		return func() {}
	}
	cmd := exec.Command("perf", "record", "-g", "-F", "999", "-o", out, "-p", strconv.Itoa(pid))
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond) // perf attaches
	return func() {
		cmd.Process.Signal(os.Interrupt)
		cmd.Wait()
	}
}

// statusOf reads a size in bytes from /proc/PID/status.
func statusOf(t testing.TB, pid int, field string) float64 {
	t.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.Lines(string(data)) {
		if v, ok := strings.CutPrefix(line, field); ok {
			kb, _ := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 64)
			return kb * 1024
		}
	}
	t.Fatalf("no %s in /proc/%d/status", field, pid)
	return 0
}

// cpuOf is the CPU seconds a process has used, user and system, from
// /proc/PID/stat.
func cpuOf(t testing.TB, pid int) float64 {
	t.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	// The command name, in parentheses, may hold spaces: fields count
	// from after it. utime and stime are fields 14 and 15.
	s := string(data)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	ut, err1 := strconv.ParseFloat(f[11], 64)
	st, err2 := strconv.ParseFloat(f[12], 64)
	if err1 != nil || err2 != nil {
		t.Fatalf("/proc/%d/stat: %q", pid, s)
	}
	const ticks = 100 // USER_HZ on Linux
	return (ut + st) / ticks
}
