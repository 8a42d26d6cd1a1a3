package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
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

// devHub is the hub emulator a relay process in development mode talks
// to, routing its outputs upstream.
func devHub(t testing.TB) *hubtest.Server {
	return hubtest.Start(t, hubemu.Config{
		Key:    hubtest.Keys(map[string][]byte{"edge1/relay": relayKey}),
		Routes: map[string]string{"up": "FROM /messages/modules/relay/outputs/* INTO $upstream"},
	})
}

// plant is a Mosquitto set up through the twin as the relay's source
// "plc", and a QoS 1 producer publishing readings to it, like a PLC
// gateway.
type plant struct {
	hub  *hubtest.Server
	br   *mosquittotest.Broker
	prod *mosquittotest.Producer
	next int // the number of the next reading
}

// newPlant starts Mosquitto, keeping every message for the relay's
// session while the relay is away (its default stops at 1000), and sets
// the relay's desired properties: the source, then desired (more keys,
// such as `,"queue":{...}`).
func newPlant(t testing.TB, hub *hubtest.Server, inflight int, desired string) *plant {
	t.Helper()
	br := mosquittotest.Start(t, mosquittotest.Options{Extra: []string{"max_queued_messages 0", fmt.Sprint("max_inflight_messages ", inflight)}})
	doc := fmt.Sprintf(`{"sources":{"plc":{"url":%q,"topics":{"plant":{"filter":"plant/#","qos":1}}}}%s}`, br.URL, desired)
	if _, err := hub.UpdateDesired("edge1", "relay", json.RawMessage(doc)); err != nil {
		t.Fatal(err)
	}
	return &plant{hub: hub, br: br, prod: mosquittotest.NewProducer(t, br)}
}

// waitUp waits until the relay takes messages from Mosquitto: Mosquitto
// keeps them for its session only once it has subscribed. Once a probe
// is through, a last one follows every probe before it (order holds per
// source), so that none is left in the queue.
func (p *plant) waitUp(t testing.TB) {
	t.Helper()
	through := func(body string) bool {
		for _, m := range p.hub.Upstream() {
			if string(m.Body) == body {
				return true
			}
		}
		return false
	}
	probes := 0
	until.True(t, "the relay to take a message from Mosquitto", func() bool {
		probes++
		body := fmt.Sprintf("probe-%d", probes)
		p.prod.Publish("plant/probe", body)
		time.Sleep(100 * time.Millisecond)
		return through(body)
	})
	p.prod.Publish("plant/probe", "probe-last")
	until.True(t, "the last probe through", func() bool { return through("probe-last") })
}

// publish sends n 256-byte readings, burst at a time with pause between
// bursts, and returns those Mosquitto acknowledged, in order.
func (p *plant) publish(t testing.TB, n, burst int, pause time.Duration) []string {
	var acked []string
	toks := make([]mqtt.Token, 0, burst)
	bodies := make([]string, 0, burst)
	for end := p.next + n; p.next < end; {
		toks, bodies = toks[:0], bodies[:0]
		for ; p.next < end && len(toks) < burst; p.next++ {
			body := reading(p.next)
			toks = append(toks, p.prod.Client.Publish("plant/line1", 1, false, body))
			bodies = append(bodies, body)
		}
		for j, tok := range toks {
			if tok.WaitTimeout(time.Minute) && tok.Error() == nil {
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

// reading is the 256-byte body of reading i; they sort in order.
func reading(i int) string {
	s := fmt.Sprintf("plc-%07d ", i)
	return s + strings.Repeat(".", 256-len(s))
}

// arrived checks what reached the hub: each body under one $.mid however
// often it came, the readings first arriving in order. It returns the
// readings that arrived and how many deliveries were duplicates.
func arrived(t testing.TB, hub *hubtest.Server) (readings map[string]bool, dups int) {
	t.Helper()
	mids := map[string]string{}
	var order []string
	for _, m := range hub.Upstream() {
		body, mid := string(m.Body), m.System["$.mid"]
		if prev, ok := mids[body]; ok {
			dups++
			if prev != mid {
				t.Fatalf("%.20s arrived with $.mid %s and again with %s", body, prev, mid)
			}
			continue
		}
		mids[body] = mid
		if strings.HasPrefix(body, "plc-") {
			order = append(order, body)
		}
	}
	for i := 1; i < len(order); i++ {
		if order[i] < order[i-1] {
			t.Fatalf("readings arrived out of order: %.11s after %.11s", order[i], order[i-1])
		}
	}
	readings = map[string]bool{}
	for _, b := range order {
		readings[b] = true
	}
	return readings, dups
}

// missing counts the bodies of want that have not arrived.
func missing(want []string, got map[string]bool) int {
	n := 0
	for _, b := range want {
		if !got[b] {
			n++
		}
	}
	return n
}

// scrape reads the relay's metrics, by name with labels
// (edgerelay_intake_refused_total{reason="full"}).
func scrape(t testing.TB, addr string) map[string]float64 {
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		name, val, ok := strings.Cut(sc.Text(), " ")
		if !ok || strings.HasPrefix(name, "#") {
			continue
		}
		if v, err := strconv.ParseFloat(val, 64); err == nil {
			out[name] = v
		}
	}
	return out
}

// freeAddr returns a loopback address free a moment ago.
func freeAddr(t testing.TB) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}
