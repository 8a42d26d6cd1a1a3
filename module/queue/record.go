package queue

import (
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
		keys := make([]string, 0, len(m.Properties))
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
func decodeBody(body []byte) (*Message, error) {
	h, rest, flags, err := decodeHead(body)
	if err != nil {
		return nil, err
	}
	m := &Message{Seq: h.seq, Enqueued: h.enqueued, Expires: h.expires}
	d := decoder{b: rest}
	m.ID = d.string()
	m.Source = d.string()
	m.Output = d.string()
	m.ContentType = d.string()
	m.ContentEncoding = d.string()
	if flags&flagProperties != 0 {
		n := d.uvarint()
		// Every pair takes at least two bytes: a bound before allocating.
		if n > uint64(len(d.b))/2 {
			d.fail()
			n = 0
		}
		m.Properties = make(map[string]string, n)
		prev := ""
		for i := range n {
			k, v := d.string(), d.string()
			// Keys are written sorted and unique; anything else is damage.
			if i > 0 && k <= prev {
				d.fail()
			}
			m.Properties[k], prev = v, k
		}
	}
	if d.err {
		return nil, fmt.Errorf("record %d: %w", h.seq, errCorrupt)
	}
	if flags&flagBody != 0 {
		m.Body = append(make([]byte, 0, len(d.b)), d.b...)
	} else if len(d.b) > 0 {
		return nil, fmt.Errorf("record %d: bytes after a nil body: %w", h.seq, errCorrupt)
	}
	return m, nil
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

func (d *decoder) string() string {
	n := d.uvarint()
	if d.err || n > uint64(len(d.b)) || n > math.MaxInt {
		d.fail()
		return ""
	}
	s := string(d.b[:n])
	d.b = d.b[n:]
	return s
}
