package source

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edgetpm/edgetpm/internal/testharness/mosquittotest"
	"github.com/edgetpm/edgetpm/internal/testharness/until"
	"github.com/edgetpm/edgetpm/module/deadletter"
	"github.com/edgetpm/edgetpm/module/queue"
	"github.com/edgetpm/edgetpm/module/twin"
)

// drained is a real queue whose messages are acknowledged as soon as
// they are appended, as if sent at once, recording their bodies' sizes.
type drained struct {
	q     *queue.Queue
	mu    sync.Mutex
	sizes []int
}

func (d *drained) Append(ctx context.Context, msgs ...*queue.Message) error {
	if err := d.q.Append(ctx, msgs...); err != nil {
		return err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, m := range msgs {
		d.sizes = append(d.sizes, len(m.Body))
		if err := d.q.Ack(m.Seq); err != nil {
			return err
		}
	}
	return nil
}

func (d *drained) taken() []int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]int(nil), d.sizes...)
}

// A batch larger than the queue's maxBytes is split, and a message no
// queue bound lets in is dead-lettered and acknowledged: the source keeps
// flowing (it used to retry such an append for ever, acknowledging
// nothing again).
func TestPoisonDoesNotStall(t *testing.T) {
	b := mosquittotest.Start(t, mosquittotest.Options{})
	q, err := queue.Open(queue.Options{Dir: t.TempDir(), MaxBytes: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { q.Close() })
	dl, err := deadletter.Open(t.TempDir(), deadletter.Options{})
	if err != nil {
		t.Fatal(err)
	}
	d := &drained{q: q}
	m := newManagerDL(t, d, dl)
	run(t, m)
	apply(t, m, twin.Source{Name: "line1", URL: b.URL, Topics: []twin.Topic{{Filter: "plant/#", QoS: 1}}})
	until.True(t, "connected", connected(m, "line1"))

	p := mosquittotest.NewProducer(t, b)
	big := strings.Repeat("x", 400<<10)
	// Published at once, the three arrive in one intake batch of 1.2 MiB.
	p.Publish("plant/big", big, big, big, strings.Repeat("y", 3<<19), "after")
	until.True(t, "the reading after the poison queued", func() bool {
		got := d.taken()
		return len(got) > 0 && got[len(got)-1] == len("after")
	})
	if got := d.taken(); len(got) != 4 {
		t.Errorf("queued bodies of sizes %v, want the three of 400 KiB and the last", got)
	}
	letters, _, err := dl.List("", 10)
	if err != nil || len(letters) != 1 || letters[0].Reason != deadletter.ReasonQueueLimit || letters[0].Size != 3<<19 || letters[0].Topic != "plant/big" {
		t.Fatalf("dead letters = %+v, %v; want the 1.5 MiB one as queue_limit", letters, err)
	}
	if st := m.Stats()["line1"]; st.DeadLettered != 1 {
		t.Errorf("stats = %+v, want 1 dead-lettered", st)
	}
}

func TestTopicProperty(t *testing.T) {
	if PropTopic != deadletter.TopicProperty {
		t.Errorf("PropTopic %q, deadletter.TopicProperty %q: want them equal", PropTopic, deadletter.TopicProperty)
	}
}

// While the queue pushes back, a flood of large QoS 0 payloads holds at
// most the inbox's byte bound in memory (it used to take 1,024 messages
// of any size): the rest waits at the broker.
func TestInboxBoundedByBytes(t *testing.T) {
	b := mosquittotest.Start(t, mosquittotest.Options{})
	q := &memQueue{refuse: errFull}
	m := newManager(t, q, nil, testLog(t))
	m.inboxBytes = 1 << 20
	run(t, m)
	apply(t, m, twin.Source{Name: "line1", URL: b.URL, Topics: []twin.Topic{{Filter: "plant/#", QoS: 0}}})
	until.True(t, "connected", connected(m, "line1"))

	const size = 256 << 10
	body := strings.Repeat("z", size)
	p := mosquittotest.NewProducer(t, b)
	for range 40 {
		if tok := p.Client.Publish("plant/flood", 0, false, body); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
			t.Fatal(tok.Error())
		}
	}
	until.True(t, "the queue pushing back", func() bool { return m.Stats()["line1"].Backpressured > 0 })
	// Held: the bound's worth, and the one message paho's reader waits with.
	held := int64(1<<20)/size + 1
	for deadline := time.Now().Add(time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if got := m.Stats()["line1"].Received; got > held {
			t.Fatalf("%d messages of %d KiB taken from the broker while the queue refuses; want at most %d", got, size>>10, held)
		}
	}
	q.setRefuse(nil)
	until.True(t, "every message queued once the queue takes them", func() bool { return len(q.messages()) == 40 })
}

// A message no configured filter matches is dead-lettered, then
// acknowledged (it used to be acknowledged and dropped).
func TestStrayDeadLettered(t *testing.T) {
	dl, err := deadletter.Open(t.TempDir(), deadletter.Options{})
	if err != nil {
		t.Fatal(err)
	}
	m := NewManager(&memQueue{}, Config{Output: "telemetry", DeadLetters: dl})
	s := newSource(m, twin.Source{Name: "gw", URL: "tcp://h", Topics: []twin.Topic{{Filter: "a/#"}}}, nil)
	msg := &fakeMessage{topic: "b/c", payload: []byte("left over"), qos: 1}
	s.handler(t.Context())(nil, msg)
	letters, _, _ := dl.List("", 10)
	if !msg.acked || len(letters) != 1 || letters[0].Reason != deadletter.ReasonUnrouted || letters[0].Topic != "b/c" || letters[0].Source != "mqtt:gw" {
		t.Fatalf("acked %v, dead letters %+v; want it acknowledged and dead-lettered as unrouted", msg.acked, letters)
	}
	if st := s.stats(); st.DeadLettered != 1 || st.Received != 1 {
		t.Errorf("stats %+v", st)
	}
}
