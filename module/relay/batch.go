package relay

import (
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"strconv"
	"strings"
	"time"

	"github.com/edgetpm/edgetpm/module/deadletter"
	"github.com/edgetpm/edgetpm/module/edgehub"
	"github.com/edgetpm/edgetpm/module/queue"
	"github.com/edgetpm/edgetpm/module/twin"
)

// billedLimit is what a batch may meter under batching.maxBytes: the
// multiple of 4096 at or below it, so that no batch pays for a unit it
// barely starts; maxBytes under one unit as it is.
func billedLimit(maxBytes int) int {
	if maxBytes < edgehub.MeterSize {
		return maxBytes
	}
	return maxBytes / edgehub.MeterSize * edgehub.MeterSize
}

// gzipOverhead is a gzip stream's header and trailer.
const gzipOverhead = 18

// ratioMargin is added to the last batch's compression ratio when
// estimating the next one's compressed size, so that batches rarely
// overshoot and have to be split.
const ratioMargin = 1.03

// packer fills one worker's batches: JSON readings for the same output
// with the same properties (the MQTT topic aside), cut so that each
// batch fills its 4 KB units as IoT Hub meters them. It is owned by the
// worker's goroutine.
type packer struct {
	hub hub
	// ratio is the last gzip batch's compressed body over its JSON body:
	// the estimate for the next (1 before any).
	ratio float64

	msgs []*queue.Message
	came []time.Time // when each member came, for batching.linger
	body int         // the JSON array: brackets, commas and members
	// diff is the index of the first member whose MQTT topic differs
	// from the first's: batches up to it carry the topic, longer ones do
	// not (len(msgs) when all share it).
	diff int
	// head is the batch header's metered and edgeHub sizes, with an
	// empty batch-count, without ([0]) and with ([1]) the MQTT topic.
	head [2]struct{ billed, hub int }
	gzip bool // the header's content encoding
}

// add takes m, which batching may pack (JSON), and returns the batches
// now ready to send, in order.
func (p *packer) add(m *queue.Message, b twin.Batching, now time.Time) [][]*queue.Message {
	var ready [][]*queue.Message
	if len(p.msgs) > 0 && !compatible(p.msgs[0], m) {
		ready = append(ready, p.take(len(p.msgs), b))
	}
	p.push(m, now, b)
	if n := len(p.msgs); n > 1 && !p.fits(n, p.body, b) {
		ready = append(ready, p.take(n-1, b))
	}
	if n := len(p.msgs); n >= b.MaxMessages {
		ready = append(ready, p.take(p.cut(b), b))
	} else if n > 1 {
		if billed, _ := p.size(n, p.body, b); billed == billedLimit(b.MaxBytes) {
			ready = append(ready, p.take(n, b)) // exactly full
		}
	}
	return ready
}

// flush returns the whole batch, nil when empty.
func (p *packer) flush(b twin.Batching) []*queue.Message {
	if len(p.msgs) == 0 {
		return nil
	}
	return p.take(len(p.msgs), b)
}

// deadline is when the batch must go (batching.linger after its oldest
// member came); ok is false when there is none.
func (p *packer) deadline(b twin.Batching) (time.Time, bool) {
	if len(p.msgs) == 0 {
		return time.Time{}, false
	}
	return p.came[0].Add(time.Duration(b.Linger)), true
}

// observe learns the compression ratio from a gzip batch sent.
func (p *packer) observe(body, compressed int) {
	if body > 0 {
		p.ratio = float64(compressed-gzipOverhead) / float64(body)
	}
}

func (p *packer) push(m *queue.Message, came time.Time, b twin.Batching) {
	p.came = append(p.came, came)
	if len(p.msgs) == 0 {
		p.msgs = append(p.msgs, m)
		p.body = 2 + len(m.Body)
		p.diff = 1
		p.header(b)
		return
	}
	p.msgs = append(p.msgs, m)
	p.body += 1 + len(m.Body)
	if p.diff == len(p.msgs)-1 && topic(m) == topic(p.msgs[0]) {
		p.diff++
	}
}

// take removes the first k members and returns them; the others start
// the next batch, keeping their place and the time they came.
func (p *packer) take(k int, b twin.Batching) []*queue.Message {
	out := p.msgs[:k:k]
	rest, came := p.msgs[k:], p.came[k:]
	p.msgs, p.came = nil, nil
	for i, m := range rest {
		p.push(m, came[i], b)
	}
	return out
}

// header measures the header of a batch led by p.msgs[0].
func (p *packer) header(b twin.Batching) {
	p.gzip = b.Compression == "gzip"
	for i, shared := range []bool{false, true} {
		h := batchHeader(p.msgs[0], shared, "", "", p.gzip)
		p.head[i].billed = edgehub.Billed(h)
		p.head[i].hub = p.hub.Size(p.msgs[0].Output, h)
	}
}

// size is what the first n members, whose JSON array is body bytes,
// meter and count against edgeHub's limit, the compressed body estimated
// from the last ratio.
func (p *packer) size(n, body int, b twin.Batching) (billed, hub int) {
	h := p.head[0]
	if n <= p.diff {
		h = p.head[1]
	}
	if p.gzip && b.Compression == "gzip" {
		ratio := p.ratio
		if ratio == 0 {
			ratio = 1
		}
		body = int(float64(body)*ratio*ratioMargin) + gzipOverhead
	}
	count := len(strconv.Itoa(n))
	return h.billed + count + body, h.hub + count + body
}

// fits tells whether the first n members, a JSON array of body bytes,
// are within batching.maxBytes and edgeHub's limit.
func (p *packer) fits(n, body int, b twin.Batching) bool {
	billed, hub := p.size(n, body, b)
	return billed <= billedLimit(b.MaxBytes) && hub <= edgehub.MaxMessageSize
}

// cut is how many members to send when maxMessages closes the batch:
// those that end at the last 4 KB boundary the whole batch crosses, so
// that its last unit is not paid for half empty; the others start the
// next batch. All of them when there is no such boundary.
func (p *packer) cut(b twin.Batching) int {
	n := len(p.msgs)
	billed, _ := p.size(n, p.body, b)
	boundary := billed / edgehub.MeterSize * edgehub.MeterSize
	if boundary == 0 || boundary == billed {
		return n
	}
	body := p.body
	for k := n - 1; k >= 2; k-- {
		body -= 1 + len(p.msgs[k].Body)
		if billed, _ := p.size(k, body, b); billed <= boundary {
			return k
		}
	}
	return n
}

// compatible tells whether m may join a batch led by first: the same
// output and application properties, the MQTT topic aside. It runs for
// every reading batched, so it compares in place.
func compatible(first, m *queue.Message) bool {
	if first.Output != m.Output || first.Rank != m.Rank {
		return false
	}
	n := 0
	for k, v := range first.Properties {
		if k == deadletter.TopicProperty {
			continue
		}
		if w, ok := m.Properties[k]; !ok || w != v {
			return false
		}
		n++
	}
	others := len(m.Properties)
	if _, ok := m.Properties[deadletter.TopicProperty]; ok {
		others--
	}
	return others == n
}

func topic(m *queue.Message) string { return m.Properties[deadletter.TopicProperty] }

// batchHeader is a batch without its body: ID ("batch-" and 32 hex
// digits; a placeholder of that length when id is empty), content type
// and encoding (gzip or utf-8), the first member's properties, the MQTT
// topic only when every member shares it, and batch-count.
func batchHeader(first *queue.Message, topicShared bool, count, id string, gz bool) *edgehub.Message {
	if id == "" {
		id = "batch-" + strings.Repeat("0", 32)
	}
	props := make(map[string]string, len(first.Properties)+1)
	for k, v := range first.Properties {
		props[k] = v
	}
	if !topicShared {
		delete(props, deadletter.TopicProperty)
	}
	props["batch-count"] = count
	enc := "utf-8"
	if gz {
		enc = "gzip"
	}
	return &edgehub.Message{ID: id, ContentType: "application/json", ContentEncoding: enc, Properties: props}
}

// compressor gzips batch bodies, reusing its writer (a flate writer is
// hundreds of KB). Owned by one worker.
type compressor struct {
	w   *gzip.Writer
	buf bytes.Buffer
}

func (c *compressor) gzip(body []byte) []byte {
	c.buf.Reset()
	if c.w == nil {
		c.w = gzip.NewWriter(&c.buf)
	} else {
		c.w.Reset(&c.buf)
	}
	c.w.Write(body) // a bytes.Buffer does not fail
	c.w.Close()
	return bytes.Clone(c.buf.Bytes())
}

// message turns queued messages into what is published: itself for one;
// for a batch, a JSON array of the bodies (gzipped with gz not nil), with
// an ID derived from the members' so a re-sent batch of the same messages
// carries the same $.mid.
func message(msgs []*queue.Message, gz *compressor) *edgehub.Message {
	first := msgs[0]
	if len(msgs) == 1 {
		return &edgehub.Message{ID: first.ID, Body: first.Body, ContentType: first.ContentType, ContentEncoding: first.ContentEncoding, Properties: first.Properties}
	}
	h := sha256.New()
	n := 1
	for _, m := range msgs {
		n += len(m.Body) + 1
	}
	body := make([]byte, 0, n)
	body = append(body, '[')
	shared := true
	for i, m := range msgs {
		h.Write([]byte(m.ID))
		h.Write([]byte{0})
		if i > 0 {
			body = append(body, ',')
		}
		body = append(body, m.Body...)
		shared = shared && topic(m) == topic(first)
	}
	body = append(body, ']')
	out := batchHeader(first, shared, strconv.Itoa(len(msgs)), "batch-"+hex.EncodeToString(h.Sum(nil)[:16]), gz != nil)
	out.Body = body
	if gz != nil {
		out.Body = gz.gzip(body)
	}
	return out
}
