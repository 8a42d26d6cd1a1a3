package main

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/edgetpm/edgetpm/internal/emulator/hubemu"
	"github.com/edgetpm/edgetpm/internal/testharness/hubtest"
	"github.com/edgetpm/edgetpm/internal/testharness/mosquittotest"
	"github.com/edgetpm/edgetpm/internal/testharness/until"
)

// BenchmarkBridge puts edge-relay beside what an operator would run
// instead: Debian's Mosquitto as a bridge from the plant broker to IoT
// Hub. In one run, each forwarder in turn takes 256-byte QoS 1 readings
// from a fresh plant Mosquitto and sends them to the same hub emulator:
//
//   - bridge: a Mosquitto process with two bridge connections, one taking
//     plant/line1 from the plant broker at QoS 1, one publishing it at
//     QoS 1 to devices/edge1/messages/events/ over TLS (certificate and
//     host checked), signed in as IoT Hub's MQTT documentation says a
//     device does: client ID the device ID, user name
//     {hub}/{device}/?api-version=2021-04-12, a SAS token as password,
//     MQTT 3.1.1, clean session;
//   - relay-device: edge-relay in device mode, its token signed in swtpm
//     with the key DPS would have imported, straight to IoT Hub;
//   - relay-module: edge-relay as a module (development mode: a module
//     connection string) through edgeHub's topics.
//
// Each forwarder is its own process. After a warm-up of $READINGS/5
// (connections, buffers, heap size), one producer publishes $READINGS
// (default 50000) readings in one burst; for each forwarder the benchmark
// reports readings/s from the first publish to the last reading recorded
// upstream, the process's CPU time (utime+stime from /proc) per reading
// in µs, its peak resident memory (VmHWM), and the relay's figures as
// ratios of the bridge's; for the relay also its heap allocations per
// reading and garbage collections per thousand readings (from its own
// /metrics). Beside them, the limit of the path: a plain paho client
// publishing the readings at QoS 1 straight to the emulator as the
// device. The relay runs with its defaults (no batching), fsyncing every
// reading before the plant broker gets its PUBACK.
//
// $EDGE_RELAY_BIN runs another build of the relay (a before);
// $RELAY_PERF=FILE records the device-mode relay's measured burst with
// perf; $RELAY_GOGC and $RELAY_GOMAXPROCS are the relay's GOGC and
// GOMAXPROCS.
func BenchmarkBridge(b *testing.B) {
	n := 50000
	if v, err := strconv.Atoi(os.Getenv("READINGS")); err == nil && v > 0 {
		n = v
	}
	// Read by the relay at its start, not by this process, which has
	// started already.
	for _, v := range []string{"GOGC", "GOMAXPROCS"} {
		if s := os.Getenv("RELAY_" + v); s != "" {
			b.Setenv(v, s)
		}
	}
	dev := newTPMDevice(b)
	hub := hubtest.Start(b, hubemu.Config{
		Key:    hubtest.Keys(map[string][]byte{"edge1": dev.key, "edge1/relay": relayKey}),
		Routes: map[string]string{"up": "FROM /messages/* INTO $upstream"},
	})
	dir := b.TempDir()
	caFile := filepath.Join(dir, "ca.pem")
	writeFile(b, caFile, hub.CA.CertPEM())
	state := dev.assignment(b, hub, "edge1", dir)
	for b.Loop() {
		bridge := forward(b, hub, n, "", func(plant *mosquittotest.Broker) (int, string, func()) {
			br := startBridge(b, hub, plant, dev.key, caFile)
			return br.Pid(), "", br.Stop
		})
		device := forward(b, hub, n, "edge1", func(plant *mosquittotest.Broker) (int, string, func()) {
			metrics := freeAddr(b)
			p := spawnRelay(b, []string{"--device-state", state, "--ca-file", caFile, "--metrics-addr", metrics}, "EDGE_RELAY_HUB_ADDRESS="+hub.Addr)
			return p.cmd.Process.Pid, metrics, p.kill
		})
		module := forward(b, hub, n, "edge1/relay", func(plant *mosquittotest.Broker) (int, string, func()) {
			metrics := freeAddr(b)
			p := startProcess(b, hub, filepath.Join(b.TempDir(), "data"), caFile, "--metrics-addr", metrics)
			return p.cmd.Process.Pid, metrics, p.kill
		})
		direct := directRate(b, hub, dev.key, n)
		for _, f := range []struct {
			name string
			r    forwarded
		}{{"bridge", bridge}, {"relay-device", device}, {"relay-module", module}} {
			b.ReportMetric(f.r.rate, f.name+"-readings/s")
			b.ReportMetric(f.r.cpu, f.name+"-CPU-µs/reading")
			b.ReportMetric(f.r.rss/(1<<20), f.name+"-peak-RSS-MB")
			if f.r.allocs > 0 {
				b.ReportMetric(f.r.allocs, f.name+"-allocs/reading")
				b.ReportMetric(f.r.gcs, f.name+"-GCs/1k-readings")
			}
		}
		for _, f := range []struct {
			name string
			r    forwarded
		}{{"device", device}, {"module", module}} {
			b.ReportMetric(f.r.rate/bridge.rate, f.name+"-rate-x-bridge")
			b.ReportMetric(f.r.cpu/bridge.cpu, f.name+"-CPU-x-bridge")
			b.ReportMetric(f.r.rate/direct, f.name+"-rate-x-direct")
		}
		b.ReportMetric(direct, "direct-readings/s")
	}
}

// forwarded is one forwarder's figures.
type forwarded struct {
	rate   float64 // readings/s, first publish to last recorded upstream
	cpu    float64 // µs of the forwarder's CPU time per reading
	rss    float64 // peak resident bytes (VmHWM)
	allocs float64 // heap allocations per reading (the relay's)
	gcs    float64 // garbage collections per 1,000 readings (the relay's)
}

// forward starts a plant Mosquitto, points the relay's twin (of twinID,
// "" for none) at it, starts a forwarder with start (its PID, its
// metrics address or "", and how to stop it), waits until a probe gets
// through, warms it up, then publishes n readings, measures and stops the
// forwarder (the bridge and the device-mode relay are the same device).
func forward(b *testing.B, hub *hubtest.Server, n int, twinID string, start func(plant *mosquittotest.Broker) (pid int, metrics string, stop func())) forwarded {
	b.Helper()
	plant := mosquittotest.Start(b, mosquittotest.Options{Extra: []string{"max_queued_messages 0", "max_inflight_messages 1000"}})
	if twinID != "" {
		device, module, _ := strings.Cut(twinID, "/")
		doc := fmt.Sprintf(`{"sources":{"plc":{"url":%q,"topics":{"line":{"filter":"plant/#","qos":1}}}}}`, plant.URL)
		if _, err := hub.UpdateDesired(device, module, json.RawMessage(doc)); err != nil {
			b.Fatal(err)
		}
	}
	pid, metrics, stop := start(plant)
	defer stop()
	prod := mosquittotest.NewProducer(b, plant)
	probe := fmt.Sprintf("probe-%d", time.Now().UnixNano())
	until.True(b, "a probe through the forwarder", func() bool {
		prod.Publish("plant/line1", probe)
		time.Sleep(100 * time.Millisecond)
		for _, m := range hub.Upstream() {
			if string(m.Body) == probe {
				return true
			}
		}
		return false
	})
	burst := func(n int) (wall time.Duration, cpu float64) {
		time.Sleep(500 * time.Millisecond) // what is still in flight lands
		before := len(hub.Upstream())
		cpu0 := cpuOf(b, pid)
		start := time.Now()
		publishAll(b, prod.Client, "plant/line1", n)
		ups, err := waitUpstream(b, hub, before+n)
		if err != nil {
			b.Fatal(err)
		}
		cpu = cpuOf(b, pid) - cpu0
		got := map[string]bool{}
		for _, m := range ups[before:] {
			got[string(m.Body)] = true
		}
		for i := range n {
			if !got[reading(i)] {
				b.Fatalf("reading %d did not arrive", i)
			}
		}
		return lastReceived(ups[before:]).Sub(start), cpu
	}
	burst(n / 5)
	var st0 map[string]float64
	if metrics != "" {
		st0 = scrape(b, metrics)
	}
	stopPerf := func() {}
	if twinID == "edge1" {
		stopPerf = perfRecord(b, pid)
	}
	wall, cpu := burst(n)
	stopPerf()
	f := forwarded{
		rate: float64(n) / wall.Seconds(),
		cpu:  cpu / float64(n) * 1e6,
		rss:  statusOf(b, pid, "VmHWM:"),
	}
	if metrics != "" {
		st := scrape(b, metrics)
		f.allocs = (st["go_memstats_mallocs_total"] - st0["go_memstats_mallocs_total"]) / float64(n)
		f.gcs = (st["go_gc_duration_seconds_count"] - st0["go_gc_duration_seconds_count"]) / float64(n) * 1000
	}
	return f
}

// startBridge starts Mosquitto as a bridge from plant to the hub, as the
// device whose key is key.
func startBridge(b *testing.B, hub *hubtest.Server, plant *mosquittotest.Broker, key []byte, caFile string) *mosquittotest.Broker {
	token := hub.ModuleToken(b, "edge1", "", key, 24*time.Hour)
	return mosquittotest.Start(b, mosquittotest.Options{Extra: []string{
		"max_queued_messages 0",
		"max_inflight_messages 1000",
		"connection plant",
		fmt.Sprintf("address 127.0.0.1:%d", plant.Port),
		"remote_clientid bridge-plant",
		"bridge_protocol_version mqttv311",
		"try_private false",
		"notifications false",
		"cleansession false",
		"topic plant/line1 in 1",
		"connection hub",
		"address " + hub.Addr,
		"bridge_cafile " + caFile,
		"remote_clientid edge1",
		"remote_username " + hub.HubHostName() + "/edge1/?api-version=2021-04-12",
		"remote_password " + token,
		"bridge_protocol_version mqttv311",
		"try_private false",
		"notifications false",
		"cleansession true",
		`topic "" out 1 plant/line1 devices/edge1/messages/events/`,
	}})
}

// directRate is the path's limit: one paho client publishing n readings
// at QoS 1 straight to the emulator as the device.
func directRate(b *testing.B, hub *hubtest.Server, key []byte, n int) float64 {
	cli := hub.Connect(b, "edge1", "", key, nil)
	defer cli.Disconnect(100)
	before := len(hub.Upstream())
	start := time.Now()
	publishAll(b, cli, "devices/edge1/messages/events/", n)
	ups, err := waitUpstream(b, hub, before+n)
	if err != nil {
		b.Fatal(err)
	}
	return float64(n) / lastReceived(ups[before:]).Sub(start).Seconds()
}

// publishAll publishes readings 0 to n-1 to topic at QoS 1, all at once,
// and waits for their PUBACKs.
func publishAll(b *testing.B, cli mqtt.Client, topic string, n int) {
	toks := make([]mqtt.Token, 0, n)
	for i := range n {
		toks = append(toks, cli.Publish(topic, 1, false, reading(i)))
	}
	for _, t := range toks {
		if t.Wait(); t.Error() != nil {
			b.Fatal(t.Error())
		}
	}
}

// perfRecord records a process's profile with perf when $RELAY_PERF
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

// cpuOf is the CPU seconds a process has used, user and system, from
// fields 14 and 15 of /proc/PID/stat.
func cpuOf(t testing.TB, pid int) float64 {
	t.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	// The command name, in parentheses, may hold spaces: fields count
	// from after it.
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

// statusOf reads a size in kB from /proc/PID/status, in bytes.
func statusOf(t testing.TB, pid int, field string) float64 {
	t.Helper()
	v, ok := procStatus(pid, field)
	if !ok {
		t.Fatalf("no %s in /proc/%d/status", field, pid)
	}
	return v
}

// procStatus reads a size in kB from /proc/PID/status, in bytes; false
// when the process or the field is not there.
func procStatus(pid int, field string) (float64, bool) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, false
	}
	for line := range strings.Lines(string(data)) {
		if v, ok := strings.CutPrefix(line, field); ok {
			kb, _ := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 64)
			return kb * 1024, true
		}
	}
	return 0, false
}
