package main

import (
	"encoding/json"
	"fmt"
	"os"
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
// Each forwarder is its own process. For each it reports readings/s from
// the first publish to the last reading recorded upstream, the process's
// CPU time (utime+stime) per reading in µs, its peak resident memory, and
// the relay's figures as ratios of the bridge's. Beside them, the limit
// of the path: a plain paho client publishing the readings at QoS 1
// straight to the emulator as the device, and the relay's share of it.
// The relay runs with its defaults (no batching), fsyncing every reading
// before the plant broker gets its PUBACK. $READINGS sets how many
// readings (default 30000).
func BenchmarkBridge(b *testing.B) {
	n := 30000
	if v, err := strconv.Atoi(os.Getenv("READINGS")); err == nil && v > 0 {
		n = v
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
		bridge := forward(b, hub, n, "", func(plant *mosquittotest.Broker) (int, func()) {
			br := startBridge(b, hub, plant, dev.key, caFile)
			return br.Pid(), br.Stop
		})
		device := forward(b, hub, n, "edge1", func(plant *mosquittotest.Broker) (int, func()) {
			p := spawnRelay(b, []string{"--device-state", state, "--ca-file", caFile}, "EDGE_RELAY_HUB_ADDRESS="+hub.Addr)
			return p.cmd.Process.Pid, p.kill
		})
		module := forward(b, hub, n, "edge1/relay", func(plant *mosquittotest.Broker) (int, func()) {
			p := startProcess(b, hub, filepath.Join(b.TempDir(), "data"), caFile)
			return p.cmd.Process.Pid, p.kill
		})
		direct := directRate(b, hub, dev.key, n)
		for _, f := range []struct {
			name string
			r    forwarded
		}{{"bridge", bridge}, {"relay-device", device}, {"relay-module", module}} {
			b.ReportMetric(f.r.rate, f.name+"-readings/s")
			b.ReportMetric(f.r.cpu, f.name+"-CPU-µs/reading")
			b.ReportMetric(f.r.rss/(1<<20), f.name+"-peak-RSS-MB")
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
	rate float64 // readings/s, first publish to last recorded upstream
	cpu  float64 // µs of the forwarder's CPU time per reading
	rss  float64 // peak resident bytes (VmHWM)
}

// forward starts a plant Mosquitto, points the relay's twin (of twinID,
// "" for none) at it, starts a forwarder with start, waits until a probe
// gets through, then publishes n readings, measures and stops the
// forwarder (the bridge and the device-mode relay are the same device).
func forward(b *testing.B, hub *hubtest.Server, n int, twinID string, start func(plant *mosquittotest.Broker) (pid int, stop func())) forwarded {
	b.Helper()
	plant := mosquittotest.Start(b, mosquittotest.Options{Extra: []string{"max_queued_messages 0", "max_inflight_messages 1000"}})
	if twinID != "" {
		device, module, _ := strings.Cut(twinID, "/")
		doc := fmt.Sprintf(`{"sources":{"plc":{"url":%q,"topics":{"line":{"filter":"plant/#","qos":1}}}}}`, plant.URL)
		if _, err := hub.UpdateDesired(device, module, json.RawMessage(doc)); err != nil {
			b.Fatal(err)
		}
	}
	pid, stop := start(plant)
	defer stop()
	prod := mosquittotest.NewProducer(b, plant)
	probe := fmt.Sprintf("probe-%d", time.Now().UnixNano())
	seen := 0
	until.True(b, "a probe through the forwarder", func() bool {
		prod.Publish("plant/line1", probe)
		time.Sleep(100 * time.Millisecond)
		for _, m := range hub.Upstream()[seen:] {
			if string(m.Body) == probe {
				return true
			}
		}
		return false
	})
	time.Sleep(500 * time.Millisecond) // the probes still in flight land
	before := len(hub.Upstream())
	cpu0 := cpuTime(b, pid)
	start0 := time.Now()
	toks := make([]mqtt.Token, 0, n)
	for i := range n {
		toks = append(toks, prod.Client.Publish("plant/line1", 1, false, reading(i)))
	}
	for _, t := range toks {
		if t.Wait(); t.Error() != nil {
			b.Fatal(t.Error())
		}
	}
	ups, err := waitUpstream(b, hub, before+n)
	if err != nil {
		b.Fatal(err)
	}
	cpu := cpuTime(b, pid) - cpu0
	rss := peakResident(pid)
	got := map[string]bool{}
	for _, m := range ups[before:] {
		got[string(m.Body)] = true
	}
	for i := range n {
		if !got[reading(i)] {
			b.Fatalf("reading %d did not arrive", i)
		}
	}
	return forwarded{
		rate: float64(n) / lastReceived(ups[before:]).Sub(start0).Seconds(),
		cpu:  float64(cpu.Microseconds()) / float64(n),
		rss:  rss,
	}
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
	toks := make([]mqtt.Token, 0, n)
	for i := range n {
		toks = append(toks, cli.Publish("devices/edge1/messages/events/", 1, false, reading(i)))
	}
	for _, t := range toks {
		if t.Wait(); t.Error() != nil {
			b.Fatal(t.Error())
		}
	}
	ups, err := waitUpstream(b, hub, before+n)
	if err != nil {
		b.Fatal(err)
	}
	return float64(n) / lastReceived(ups[before:]).Sub(start).Seconds()
}

// cpuTime is a process's user and system time so far, from fields 14 and
// 15 of /proc/PID/stat, in clock ticks of 1/100 s (USER_HZ on Linux).
func cpuTime(b *testing.B, pid int) time.Duration {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		b.Fatal(err)
	}
	// The command name, field 2, is in parentheses and may hold spaces.
	fields := strings.Fields(string(data[strings.LastIndexByte(string(data), ')')+2:]))
	utime, err1 := strconv.ParseInt(fields[11], 10, 64)
	stime, err2 := strconv.ParseInt(fields[12], 10, 64)
	if err1 != nil || err2 != nil {
		b.Fatalf("/proc/%d/stat: %q", pid, data)
	}
	return time.Duration(utime+stime) * 10 * time.Millisecond
}

// peakResident is a process's peak resident set size (VmHWM) in bytes.
func peakResident(pid int) float64 { return statusField(pid, "VmHWM:") }
