package source

import (
	"context"
	"encoding/binary"
	"os"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/edgetpm/edgetpm/internal/emulator/hubemu"
	"github.com/edgetpm/edgetpm/internal/sas"
	"github.com/edgetpm/edgetpm/internal/testharness/hubtest"
	"github.com/edgetpm/edgetpm/internal/testharness/mosquittotest"
	"github.com/edgetpm/edgetpm/module/edgehub"
	"github.com/edgetpm/edgetpm/module/queue"
	"github.com/edgetpm/edgetpm/module/relay"
	"github.com/edgetpm/edgetpm/module/twin"
)

var benchKey = []byte("bench-module-key-0123456789abcdef")

const benchMessages = 20000

// BenchmarkPipeline is the whole path with durability on, 256-byte
// messages: a producer publishes QoS 1 to a real Mosquitto, the relay takes
// them (queued and fsync'd before the broker gets its ack) and publishes
// them to the edgeHub emulator over TLS. Side by side in the same run, the
// limit: a plain paho QoS 1 publisher sending straight to the emulator
// with no queue; and the Mosquitto hop alone, which the relay's path also
// crosses. It reports the rates, the relay's share of the direct one, intake-to-PUBACK
// latency (producer publish to the emulator's record) and peak resident
// memory of the whole process (producer, relay and emulator together).
// Bytes on disk per message are the queue's own benchmark's.
func BenchmarkPipeline(b *testing.B) {
	hub := hubtest.Start(b, hubemu.Config{
		Key:    hubtest.Keys(map[string][]byte{"edge1/relay": benchKey, "edge1/direct": benchKey}),
		Routes: map[string]string{"up": "FROM /messages/* INTO $upstream"},
	})
	for b.Loop() {
		direct := directRate(b, hub)
		b.ReportMetric(mosquittoRate(b, false), "mosquitto-hop-msgs/s")
		b.ReportMetric(mosquittoRate(b, true), "mosquitto-hop-manual-ack-msgs/s")
		rate, p50, p99, rss := pipelineRun(b, hub)
		b.ReportMetric(direct, "direct-msgs/s")
		b.ReportMetric(rate, "relay-msgs/s")
		b.ReportMetric(rate/direct*100, "%-of-direct")
		b.ReportMetric(float64(p50.Microseconds())/1000, "p50-ms")
		b.ReportMetric(float64(p99.Microseconds())/1000, "p99-ms")
		b.ReportMetric(rss/(1<<20), "RSS-MB")
	}
}

// directRate is the limit: QoS 1 publishes straight to the emulator, as
// fast as one paho client gets them acknowledged.
func directRate(b *testing.B, hub *hubtest.Server) float64 {
	cli := hub.Connect(b, "edge1", "direct", benchKey, nil)
	defer cli.Disconnect(100)
	body := make([]byte, 256)
	// The messages the relay sends: output name, message ID and the
	// source topic in the property bag, which the emulator parses too.
	topics := make([]string, benchMessages)
	for i := range topics {
		topics[i] = "devices/edge1/modules/direct/messages/events/%24.on=telemetry&%24.mid=" + edgehub.NewMessageID() + "&mqtt-topic=bench%2Fline"
	}
	before := len(hub.Upstream())
	start := time.Now()
	toks := make([]mqtt.Token, 0, benchMessages)
	for _, topic := range topics {
		toks = append(toks, cli.Publish(topic, 1, false, body))
	}
	for _, t := range toks {
		if t.Wait(); t.Error() != nil {
			b.Fatal(t.Error())
		}
	}
	d := time.Since(start)
	if got := len(hub.Upstream()) - before; got != benchMessages {
		b.Fatalf("direct: %d of %d recorded", got, benchMessages)
	}
	return benchMessages / d.Seconds()
}

// mosquittoRate is the broker hop alone: a producer through Mosquitto to
// a paho subscriber that acknowledges at once, nothing queued or sent on;
// with manual set, acknowledged by msg.Ack() from another goroutine, as
// the relay's sources do.
func mosquittoRate(b *testing.B, manual bool) float64 {
	br := mosquittotest.Start(b, mosquittotest.Options{Extra: []string{"max_inflight_messages 1000", "max_queued_messages 1000000"}})
	var got atomic.Int64
	all := make(chan struct{})
	sub := mqtt.NewClient(mqtt.NewClientOptions().AddBroker(br.URL).SetClientID("hop").SetOrderMatters(true).SetAutoAckDisabled(manual))
	if t := sub.Connect(); t.Wait() && t.Error() != nil {
		b.Fatal(t.Error())
	}
	defer sub.Disconnect(10)
	acks := make(chan mqtt.Message, 4096)
	defer close(acks)
	go func() {
		for m := range acks {
			m.Ack()
			if got.Add(1) == benchMessages {
				close(all)
			}
		}
	}()
	sub.Subscribe("bench/#", 1, func(_ mqtt.Client, m mqtt.Message) { acks <- m }).Wait()
	p := mosquittotest.NewProducer(b, br)
	body := make([]byte, 256)
	start := time.Now()
	for range benchMessages {
		p.Client.Publish("bench/hop", 1, false, body)
	}
	select {
	case <-all:
	case <-time.After(time.Minute):
		b.Fatalf("%d of %d through Mosquitto", got.Load(), benchMessages)
	}
	return benchMessages / time.Since(start).Seconds()
}

func pipelineRun(b *testing.B, hub *hubtest.Server) (rate float64, p50, p99 time.Duration, rss float64) {
	br := mosquittotest.Start(b, mosquittotest.Options{Extra: []string{"max_inflight_messages 1000", "max_queued_messages 1000000"}})
	dir := b.TempDir()
	// The relay's goroutines carry a profiler label, so that a CPU
	// profile of this benchmark tells its share (-tagfocus part=relay).
	relayCtx := pprof.WithLabels(context.Background(), pprof.Labels("part", "relay"))
	pprof.SetGoroutineLabels(relayCtx)
	defer pprof.SetGoroutineLabels(context.Background())
	q, err := queue.Open(queue.Options{Dir: dir})
	if err != nil {
		b.Fatal(err)
	}
	defer q.Close()
	var r *relay.Relay
	sess, err := edgehub.New(edgehub.Config{
		Identity: edgehub.Identity{HubHostName: hub.HubHostName(), DeviceID: "edge1", ModuleID: "relay", Host: hub.GatewayHostName(), Address: hub.Addr},
		Signer:   sas.Key(benchKey),
		RootCAs:  hub.Pool,
	})
	if err != nil {
		b.Fatal(err)
	}
	r = relay.New(q, sess, twin.Defaults(), relay.Options{})
	m := NewManager(r, Config{Output: "telemetry", Identity: "edge1/relay", StateDir: b.TempDir()})
	ctx, cancel := context.WithCancel(relayCtx)
	done := make(chan struct{}, 3)
	go func() { sess.Run(ctx); done <- struct{}{} }()
	go func() { r.Run(ctx); done <- struct{}{} }()
	go func() { m.Run(ctx); done <- struct{}{} }()
	defer func() { cancel(); <-done; <-done; <-done }()
	if err := m.Apply(ctx, []twin.Source{{Name: "bench", URL: br.URL, Topics: []twin.Topic{{Filter: "bench/#", QoS: 1}}}}, "telemetry"); err != nil {
		b.Fatal(err)
	}
	for !sess.Connected() {
		time.Sleep(10 * time.Millisecond)
	}
	pprof.SetGoroutineLabels(context.Background())

	p := mosquittotest.NewProducer(b, br)
	before := len(hub.Upstream())
	start := time.Now()
	toks := make([]mqtt.Token, 0, benchMessages)
	body := make([]byte, 256)
	var peakRSS float64
	for range benchMessages {
		binary.BigEndian.PutUint64(body, uint64(time.Now().UnixNano()))
		toks = append(toks, p.Client.Publish("bench/line", 1, false, slices.Clone(body)))
	}
	for _, t := range toks {
		if t.Wait(); t.Error() != nil {
			b.Fatal(t.Error())
		}
	}
	// Resident memory is sampled while the messages go through.
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		for ctx.Err() == nil {
			peakRSS = max(peakRSS, residentBytes())
			time.Sleep(50 * time.Millisecond)
		}
	}()
	wctx, wcancel := context.WithTimeout(ctx, 5*time.Minute)
	all, err := hub.WaitUpstream(wctx, before+benchMessages)
	wcancel()
	if err != nil {
		b.Fatal(err)
	}
	ups := all[before:]
	var last time.Time
	lat := make([]time.Duration, 0, len(ups))
	for _, u := range ups {
		sent := time.Unix(0, int64(binary.BigEndian.Uint64(u.Body)))
		lat = append(lat, u.Received.Sub(sent))
		if u.Received.After(last) {
			last = u.Received
		}
	}
	d := last.Sub(start)
	slices.Sort(lat)
	cancel()
	<-sampled
	return benchMessages / d.Seconds(), lat[len(lat)/2], lat[len(lat)*99/100], peakRSS
}

// residentBytes reads this process's resident set size.
func residentBytes() float64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 64)
			return kb * 1024
		}
	}
	return 0
}
