package source

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"sync"
)

// recent remembers the last QoS 1 messages a source took, by packet ID,
// each with a digest of its topic and payload and the $.mid it was given,
// so that the broker's redelivery of a message whose PUBACK it never
// received (the connection dropped, or the process was killed, after we
// took it) keeps its $.mid, and is not queued a second time when it is
// known to be queued.
//
// MQTT 3.1.1 carries no message identity, but a QoS 1 packet ID stays
// taken on the broker until our PUBACK arrives, and on reconnecting to the
// session the broker sends such a message again with DUP set and the same
// packet ID (MQTT-4.4.0-1). A DUP delivery whose packet ID and digest match
// an entry is therefore that message. Brokers hand out packet IDs in
// sequence (Mosquitto does), so an ID comes back only after 65,535 others,
// far more than the recentSize remembered here; and a connection that
// finds no session on the broker forgets them all.
//
// An entry is written before its message is appended (staged) and marked
// once the append has returned (queued). A redelivery of a queued message
// is acknowledged and dropped; of a staged one, which a crash may have cut
// off before the append, queued again under the same $.mid. The file is
// written without fsync: it survives a killed process. A power cut may
// lose the last entries, and their redeliveries are then queued again
// under a new $.mid: a duplicate, never a loss.
type recent struct {
	mu    sync.Mutex
	f     *os.File // nil: memory only
	key   [16]byte // the session: client ID and broker address
	slots []slot   // a ring, by sequence
	next  uint64   // the sequence of the next entry; 0 is never used
	byID  map[uint16]uint64
}

type slot struct {
	seq    uint64 // 0: empty
	id     uint16
	queued bool
	sum    digest
	mid    [midSize]byte
}

type digest [16]byte

const (
	recentSize  = 4096
	midSize     = 32                       // edgehub.NewMessageID: 128 bits in hex
	slotSize    = 8 + 2 + 1 + 16 + midSize // seq, packet ID, queued, digest, $.mid
	recentMagic = "EDGERCT2"
	headerSize  = len(recentMagic) + 16
	// maxSeq is far beyond any count of messages, and far from overflow.
	maxSeq = 1 << 62
)

// digestOf is a message's identity besides its packet ID.
// It is taken for every QoS 1 reading: the bytes are hashed from a buffer
// on the stack, which holds the usual reading whole.
func digestOf(topic string, payload []byte) digest {
	var stack [1024]byte
	b := append(append(append(stack[:0], topic...), 0), payload...)
	sum := sha256.Sum256(b)
	return digest(sum[:len(digest{})])
}

// openRecent loads path, or starts it afresh when it is missing, damaged
// or of another session. An empty path keeps the entries in memory.
func openRecent(path, session string) (*recent, error) {
	r := &recent{slots: make([]slot, recentSize), next: 1, byID: map[uint16]uint64{}}
	sum := sha256.Sum256([]byte(session))
	copy(r.key[:], sum[:])
	if path == "" {
		return r, nil
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	r.f = f
	b, err := io.ReadAll(io.LimitReader(f, int64(headerSize+recentSize*slotSize)))
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	if len(b) < headerSize || string(b[:len(recentMagic)]) != recentMagic || !bytes.Equal(b[len(recentMagic):headerSize], r.key[:]) {
		if err := r.reset(); err != nil {
			f.Close()
			return nil, err
		}
		return r, nil
	}
	for off := headerSize; off+slotSize <= len(b); off += slotSize {
		s := decodeSlot(b[off : off+slotSize])
		if s.seq == 0 || s.seq > maxSeq || s.id == 0 {
			continue // empty, or damaged
		}
		r.slots[s.seq%recentSize] = s
		r.next = max(r.next, s.seq+1)
	}
	for _, s := range r.slots {
		// A slot may hold an entry older than one recentSize later that
		// a torn write left in place of its successor: only the newest
		// recentSize count.
		if s.seq != 0 && r.next-s.seq <= recentSize && s.seq > r.byID[s.id] {
			r.byID[s.id] = s.seq
		}
	}
	return r, nil
}

func decodeSlot(b []byte) slot {
	s := slot{seq: binary.BigEndian.Uint64(b), id: binary.BigEndian.Uint16(b[8:]), queued: b[10] == 1}
	copy(s.sum[:], b[11:])
	copy(s.mid[:], b[11+len(s.sum):])
	return s
}

func (s slot) append(b []byte) []byte {
	b = binary.BigEndian.AppendUint64(b, s.seq)
	b = binary.BigEndian.AppendUint16(b, s.id)
	q := byte(0)
	if s.queued {
		q = 1
	}
	b = append(b, q)
	b = append(b, s.sum[:]...)
	return append(b, s.mid[:]...)
}

// lookup finds the entry of a message with packet ID id and digest sum:
// the $.mid it was given, and whether it is known to be queued.
func (r *recent) lookup(id uint16, sum digest) (mid string, queued, ok bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	seq, ok := r.byID[id]
	if !ok || r.next-seq > recentSize {
		return "", false, false
	}
	s := r.slots[seq%recentSize]
	if s.seq != seq || s.sum != sum {
		return "", false, false
	}
	return string(s.mid[:]), s.queued, true
}

// stage records messages about to be appended, in order, and writes them
// out; it returns each one's sequence, for queued (0 for a message ID of
// another length than edgehub.NewMessageID's, which is not recorded).
func (r *recent) stage(ids []uint16, sums []digest, mids []string) (seqs []uint64, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	first := r.next
	seqs = make([]uint64, len(ids))
	for i, id := range ids {
		if len(mids[i]) != midSize {
			continue
		}
		seq := r.next
		seqs[i] = seq
		r.next++
		old := r.slots[seq%recentSize]
		if old.seq != 0 && r.byID[old.id] == old.seq {
			delete(r.byID, old.id)
		}
		s := slot{seq: seq, id: id, sum: sums[i]}
		copy(s.mid[:], mids[i])
		r.slots[seq%recentSize] = s
		r.byID[id] = seq
	}
	return seqs, r.write(first, r.next)
}

// queued marks staged entries as appended (a 0 is skipped).
func (r *recent) queued(seqs []uint64) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	first, next := uint64(0), uint64(0)
	for _, seq := range seqs {
		if s := &r.slots[seq%recentSize]; seq != 0 && s.seq == seq {
			s.queued = true
			if first == 0 {
				first = seq
			}
			next = seq + 1
		}
	}
	if first == 0 {
		return nil
	}
	return r.write(first, next)
}

// write writes the slots of sequences [first, next): one run of the ring,
// or two when it wraps.
func (r *recent) write(first, next uint64) error {
	if r.f == nil {
		return nil
	}
	first = max(first, next-min(next, recentSize))
	var errs []error
	for seq := first; seq < next; {
		start := seq % recentSize
		n := min(next-seq, recentSize-start)
		buf := make([]byte, 0, n*slotSize)
		for i := range n {
			buf = r.slots[start+i].append(buf)
		}
		if _, err := r.f.WriteAt(buf, int64(headerSize)+int64(start)*slotSize); err != nil {
			errs = append(errs, err)
		}
		seq += n
	}
	return errors.Join(errs...)
}

// forget forgets every entry: the broker has no session, so nothing it
// sends can be a redelivery.
func (r *recent) forget() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.reset()
}

func (r *recent) reset() error {
	clear(r.slots)
	clear(r.byID)
	if r.f == nil {
		return nil
	}
	if err := r.f.Truncate(0); err != nil {
		return fmt.Errorf("reset %s: %w", r.f.Name(), err)
	}
	if _, err := r.f.WriteAt(append([]byte(recentMagic), r.key[:]...), 0); err != nil {
		return fmt.Errorf("reset %s: %w", r.f.Name(), err)
	}
	return nil
}

// close closes the file; remove also deletes it (the session has ended).
func (r *recent) close(remove bool) error {
	if r.f == nil {
		return nil
	}
	err := r.f.Close()
	if remove {
		if rerr := os.Remove(r.f.Name()); rerr != nil && !errors.Is(rerr, fs.ErrNotExist) {
			err = errors.Join(err, rerr)
		}
	}
	return err
}
