package queue

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"math"
	"slices"
	"time"
)

// A record is one message on disk, little endian:
//
//	[0:4)   n, the length of the body
//	[4:8)   CRC-32C of bytes [0:4) and of the body, so that a torn length
//	        is caught as surely as a torn body
//	[8:8+n) body: seq u64, flags u8, the set times as varint seconds and
//	        uvarint nanoseconds, ID, Source, Output, ContentType and
//	        ContentEncoding as uvarint-length strings, the properties as a
//	        uvarint count of key/value strings in increasing key order,
//	        then the message body up to the end
//
// Seq sits at a fixed place so that the group-commit writer can stamp it
// into a record the producer's goroutine encoded.
const (
	recHeader = 8
	seqLen    = 8
	// maxBody bounds a record so that a corrupt length cannot make recovery
	// read gigabytes. IoT Hub takes at most 256 KiB per message; this
	// leaves room for anything a producer could mean.
	maxBody = 64 << 20
)

const (
	flagEnqueued = 1 << iota
	flagExpires
	flagProperties // Properties not nil, so that an empty map comes back empty
	flagBody       // Body not nil
	flagsKnown     = flagEnqueued | flagExpires | flagProperties | flagBody
)

var (
	castagnoli = crc32.MakeTable(crc32.Castagnoli)

	// errTorn is a record cut short by the end of the data: a write that a
	// crash interrupted.
	errTorn = errors.New("torn record")
	// errCorrupt is a record whose length, checksum or content is wrong.
	errCorrupt = errors.New("corrupt record")
)

// appendRecord appends m's record with seq to dst.
func appendRecord(dst []byte, m *Message, seq uint64) []byte {
	start := len(dst)
	dst = append(dst, make([]byte, recHeader)...)
	dst = binary.LittleEndian.AppendUint64(dst, seq)
	var flags byte
	if !m.Enqueued.IsZero() {
		flags |= flagEnqueued
	}
	if !m.Expires.IsZero() {
		flags |= flagExpires
	}
	if m.Properties != nil {
		flags |= flagProperties
	}
	if m.Body != nil {
		flags |= flagBody
	}
	dst = append(dst, flags)
	for _, t := range []time.Time{m.Enqueued, m.Expires} {
		if !t.IsZero() {
			dst = binary.AppendVarint(dst, t.Unix())
			dst = binary.AppendUvarint(dst, uint64(t.Nanosecond()))
		}
	}
	for _, s := range []string{m.ID, m.Source, m.Output, m.ContentType, m.ContentEncoding} {
		dst = appendString(dst, s)
	}
	if m.Properties != nil {
		dst = binary.AppendUvarint(dst, uint64(len(m.Properties)))
		var stack [16]string // the usual few keys sort without allocating
		keys := stack[:0]
		for k := range m.Properties {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for _, k := range keys {
			dst = appendString(dst, k)
			dst = appendString(dst, m.Properties[k])
		}
	}
	dst = append(dst, m.Body...)
	sealRecord(dst[start:])
	return dst
}

// recordSizeHint bounds the size of m's record from above, for sizing a
// buffer before encoding.
func recordSizeHint(m *Message) int {
	// Header, seq, flags, two times, and a uvarint per string.
	n := recHeader + seqLen + 1 + 2*(10+5) + 5*binary.MaxVarintLen64 + binary.MaxVarintLen64
	n += len(m.ID) + len(m.Source) + len(m.Output) + len(m.ContentType) + len(m.ContentEncoding) + len(m.Body)
	for k, v := range m.Properties {
		n += 2*binary.MaxVarintLen64 + len(k) + len(v)
	}
	return n
}

func appendString(dst []byte, s string) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(s)))
	return append(dst, s...)
}

// stampRecord writes seq into the encoded record rec and checksums it again.
func stampRecord(rec []byte, seq uint64) {
	binary.LittleEndian.PutUint64(rec[recHeader:], seq)
	sealRecord(rec)
}

func sealRecord(rec []byte) {
	binary.LittleEndian.PutUint32(rec, uint32(len(rec)-recHeader))
	binary.LittleEndian.PutUint32(rec[4:], recordCRC(rec[:4], rec[recHeader:]))
}

func recordCRC(length, body []byte) uint32 {
	return crc32.Update(crc32.Update(0, castagnoli, length), castagnoli, body)
}

// recordLen returns the size of the record whose header starts b, or an
// error when the header cannot start a record.
func recordLen(b []byte) (int64, error) {
	if len(b) < recHeader {
		return 0, errTorn
	}
	n := binary.LittleEndian.Uint32(b)
	if n < seqLen+1 || n > maxBody {
		return 0, fmt.Errorf("body length %d: %w", n, errCorrupt)
	}
	return recHeader + int64(n), nil
}

// checkRecord checks the record that starts b and returns its body and
// size. errTorn means b ends inside it.
func checkRecord(b []byte) (body []byte, size int64, err error) {
	size, err = recordLen(b)
	if err != nil {
		return nil, 0, err
	}
	if int64(len(b)) < size {
		return nil, 0, errTorn
	}
	body = b[recHeader:size]
	if recordCRC(b[:4], body) != binary.LittleEndian.Uint32(b[4:]) {
		return nil, 0, fmt.Errorf("checksum: %w", errCorrupt)
	}
	return body, size, nil
}

// bodySeq returns the seq of a checked record body.
func bodySeq(body []byte) uint64 { return binary.LittleEndian.Uint64(body) }

// head is the part of a record the queue needs to keep its bounds: age and
// expiry of the oldest message, without decoding the rest.
type head struct {
	seq               uint64
	enqueued, expires time.Time
}

// decodeHead decodes the fields before the strings.
func decodeHead(body []byte) (head, []byte, byte, error) {
	d := decoder{b: body}
	var h head
	h.seq = d.uint64()
	flags := d.byte()
	if flags&^flagsKnown != 0 {
		d.fail()
	}
	if flags&flagEnqueued != 0 {
		h.enqueued = d.time()
	}
	if flags&flagExpires != 0 {
		h.expires = d.time()
	}
	if d.err {
		return head{}, nil, 0, fmt.Errorf("header of record: %w", errCorrupt)
	}
	return h, d.b, flags, nil
}

// decodeBody decodes a checked record body into a new Message that shares
// no memory with body.
func decodeBody(body []byte) (*Message, error) { return (*blocks)(nil).decode(body) }

// blocks is where a reader's messages come from: the strings and property
// maps that one source's messages repeat are shared, and bodies and
// Message values are carved from larger blocks, so that a message read
// costs about one allocation (its ID). A nil *blocks allocates each
// message on its own. Not safe for concurrent use.
type blocks struct {
	strs   map[string]string            // interned strings
	props  map[string]map[string]string // property maps by their encoding
	bodies []byte                       // the free end of the current block of bodies
	msgs   []Message                    // the free end of the current block of Messages
}

const (
	// maxShared bounds the strings and maps kept for sharing; past it,
	// sharing starts over.
	maxShared = 1024
	// bodyBlock is the size of a block of bodies; a body larger than a
	// quarter of it gets its own.
	bodyBlock = 64 << 10
	msgBlock  = 32
)

// decode decodes a checked record body into a new Message that shares no
// memory with body; with b, it may share its strings, Properties map,
// and the blocks holding its Body and itself, with other messages b
// decoded.
func (b *blocks) decode(body []byte) (*Message, error) {
	h, rest, flags, err := decodeHead(body)
	if err != nil {
		return nil, err
	}
	m := b.message()
	m.Seq, m.Enqueued, m.Expires = h.seq, h.enqueued, h.expires
	d := decoder{b: rest}
	m.ID = string(d.bytes())
	m.Source = b.intern(d.bytes())
	m.Output = b.intern(d.bytes())
	m.ContentType = b.intern(d.bytes())
	m.ContentEncoding = b.intern(d.bytes())
	if flags&flagProperties != 0 {
		m.Properties = b.properties(&d)
	}
	if d.err {
		return nil, fmt.Errorf("record %d: %w", h.seq, errCorrupt)
	}
	if flags&flagBody != 0 {
		m.Body = b.body(d.b)
	} else if len(d.b) > 0 {
		return nil, fmt.Errorf("record %d: bytes after a nil body: %w", h.seq, errCorrupt)
	}
	return m, nil
}

func (b *blocks) message() *Message {
	if b == nil {
		return new(Message)
	}
	if len(b.msgs) == cap(b.msgs) {
		b.msgs = make([]Message, 0, msgBlock)
	}
	b.msgs = b.msgs[:len(b.msgs)+1]
	return &b.msgs[len(b.msgs)-1]
}

func (b *blocks) intern(s []byte) string {
	if b == nil || len(s) == 0 {
		return string(s)
	}
	if v, ok := b.strs[string(s)]; ok {
		return v
	}
	if b.strs == nil || len(b.strs) >= maxShared {
		b.strs = make(map[string]string)
	}
	v := string(s)
	b.strs[v] = v
	return v
}

func (b *blocks) body(s []byte) []byte {
	if b == nil || len(s) == 0 || len(s) > bodyBlock/4 {
		return append(make([]byte, 0, len(s)), s...)
	}
	if cap(b.bodies)-len(b.bodies) < len(s) {
		b.bodies = make([]byte, 0, bodyBlock)
	}
	start := len(b.bodies)
	b.bodies = append(b.bodies, s...)
	return b.bodies[start:len(b.bodies):len(b.bodies)]
}

// properties decodes the properties' count and pairs. The pairs are
// checked first in place; a map decoded before from the same bytes is
// shared.
func (b *blocks) properties(d *decoder) map[string]string {
	start := d.b
	n := d.uvarint()
	// Every pair takes at least two bytes: a bound before allocating.
	if n > uint64(len(d.b))/2 {
		d.fail()
		return nil
	}
	var prev []byte
	for i := range n {
		k := d.bytes()
		d.bytes()
		// Keys are written sorted and unique; anything else is damage.
		if i > 0 && bytes.Compare(k, prev) <= 0 {
			d.fail()
		}
		prev = k
	}
	if d.err {
		return nil
	}
	raw := start[:len(start)-len(d.b)]
	if b != nil {
		if p, ok := b.props[string(raw)]; ok {
			return p
		}
	}
	p := make(map[string]string, n)
	pd := decoder{b: raw}
	pd.uvarint()
	for range n {
		k := b.intern(pd.bytes())
		p[k] = b.intern(pd.bytes())
	}
	if b != nil {
		if b.props == nil || len(b.props) >= maxShared {
			b.props = make(map[string]map[string]string)
		}
		b.props[string(raw)] = p
	}
	return p
}

// decoder reads a body front to back; the first fault sets err and every
// later read returns zero, so that callers check once at the end.
type decoder struct {
	b   []byte
	err bool
}

func (d *decoder) fail() { d.err, d.b = true, nil }

func (d *decoder) uint64() uint64 {
	if len(d.b) < 8 {
		d.fail()
		return 0
	}
	v := binary.LittleEndian.Uint64(d.b)
	d.b = d.b[8:]
	return v
}

func (d *decoder) byte() byte {
	if len(d.b) < 1 {
		d.fail()
		return 0
	}
	v := d.b[0]
	d.b = d.b[1:]
	return v
}

func (d *decoder) uvarint() uint64 {
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.fail()
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) time() time.Time {
	sec, n := binary.Varint(d.b)
	if n <= 0 {
		d.fail()
		return time.Time{}
	}
	d.b = d.b[n:]
	nsec := d.uvarint()
	if d.err || nsec >= 1e9 {
		d.fail()
		return time.Time{}
	}
	t := time.Unix(sec, int64(nsec))
	if t.IsZero() {
		// A set time is never the zero time: that is what the flag is for.
		d.fail()
	}
	return t
}

// bytes reads a uvarint-length string in place.
func (d *decoder) bytes() []byte {
	n := d.uvarint()
	if d.err || n > uint64(len(d.b)) || n > math.MaxInt {
		d.fail()
		return nil
	}
	s := d.b[:n:n]
	d.b = d.b[n:]
	return s
}
