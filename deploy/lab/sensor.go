package lab

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"sync"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/edgetpm/edgetpm/internal/emulator/hubemu"
)

// SensorTopic is where the sample sensor publishes.
const SensorTopic = "lab/line1/temperature"

// reading is what the sensor publishes.
type reading struct {
	Seq         int64     `json:"seq"`
	Temperature float64   `json:"temperature"`
	Unit        string    `json:"unit"`
	Time        time.Time `json:"time"`
}

// sensor publishes readings at a steady rate with QoS 1, like a PLC
// gateway, and remembers which ones the broker acknowledged.
type sensor struct {
	client paho.Client
	cancel context.CancelFunc
	done   chan struct{}
	acks   sync.WaitGroup // publishes awaiting the broker's PUBACK

	mu    sync.Mutex
	acked []int64 // sequence numbers, ascending
}

func (l *Lab) startSensor(ctx context.Context, brokerURL string) error {
	opts := paho.NewClientOptions().
		AddBroker(brokerURL).
		SetClientID("lab-sensor").
		SetCleanSession(true).
		SetAutoReconnect(true).
		SetConnectRetry(true).
		SetOrderMatters(false)
	c := paho.NewClient(opts)
	if t := c.Connect(); !t.WaitTimeout(10*time.Second) || t.Error() != nil {
		return fmt.Errorf("sensor: connect to %s: %v", brokerURL, t.Error())
	}
	sctx, cancel := context.WithCancel(context.Background())
	s := &sensor{client: c, cancel: cancel, done: make(chan struct{})}
	go s.run(sctx, time.Duration(float64(time.Second)/l.cfg.Rate))
	l.onClose(func() error { s.stop(); return nil })
	l.sensor = s
	l.printf("sensor", "publishing %g readings/s to %s on %s", l.cfg.Rate, SensorTopic, brokerURL)
	return nil
}

func (s *sensor) run(ctx context.Context, every time.Duration) {
	defer close(s.done)
	tick := time.NewTicker(every)
	defer tick.Stop()
	for seq := int64(1); ; seq++ {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		r := reading{Seq: seq, Temperature: math.Round((21+2*math.Sin(float64(seq)/20))*100) / 100, Unit: "C", Time: time.Now().UTC()}
		body, _ := json.Marshal(r)
		t := s.client.Publish(SensorTopic, 1, false, body)
		// Acknowledged or not, the next reading is due: a gateway keeps
		// sampling while its broker is slow.
		s.acks.Go(func() {
			if t.WaitTimeout(30*time.Second) && t.Error() == nil {
				s.mu.Lock()
				i, _ := slices.BinarySearch(s.acked, seq)
				s.acked = slices.Insert(s.acked, i, seq)
				s.mu.Unlock()
			}
		})
	}
}

// stop stops publishing, waits for the broker's last acknowledgements and
// disconnects; it may be called more than once.
func (s *sensor) stop() {
	s.cancel()
	<-s.done
	s.acks.Wait()
	if s.client.IsConnected() {
		s.client.Disconnect(1000)
	}
}

func (s *sensor) published() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return int64(len(s.acked))
}

// missing returns the acknowledged readings that are not in msgs, by seq.
// A message is one reading or, from the relay's batching, a JSON array of
// them.
func (s *sensor) missing(msgs []hubemu.Message) []int64 {
	seen := map[int64]bool{}
	for _, m := range msgs {
		var batch []reading
		if err := json.Unmarshal(m.Body, &batch); err != nil {
			var r reading
			if json.Unmarshal(m.Body, &r) != nil {
				continue
			}
			batch = []reading{r}
		}
		for _, r := range batch {
			seen[r.Seq] = true
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []int64
	for _, seq := range s.acked {
		if !seen[seq] {
			out = append(out, seq)
		}
	}
	return out
}
