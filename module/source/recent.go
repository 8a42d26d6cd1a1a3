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

// recent remembers the packet IDs of the last messages a source queued,
// each with a digest of its topic and payload, so that the broker's
// redelivery of a message whose PUBACK it never received (we were killed,
// or the connection dropped, between the append and the acknowledgement)
// is acknowledged and dropped instead of queued again under a new $.mid.
//
// MQTT 3.1.1 carries no message identity, but a QoS 1 packet ID stays
// taken on the broker until our PUBACK arrives, and on reconnecting to the
// session the broker sends such a message again with DUP set and the same
// packet ID (MQTT-4.4.0-1). A DUP delivery whose packet ID and digest match
// a message we queued is therefore that message. Brokers hand out packet
// IDs in sequence (Mosquitto does), so an ID comes back only after 65,535
// others, far more than the recentSize remembered here; and a connection
// that finds no session on the broker forgets them all.
//
// The entries live in a file of the state folder, written after each
// append and before the acknowledgements, without fsync: they survive a
// killed process. A power cut may lose the last ones, and their
// redeliveries are then queued again: a duplicate, never a loss.
type recent struct {
	mu    sync.Mutex
	f     *os.File // nil: memory only
	key   [16]byte // the session: client ID and broker address
	slots []slot   // a ring, by sequence
	next  uint64   // the sequence of the next entry; 0 is never used
	byID  map[uint16]uint64
}

type slot struct {
	seq uint64 // 0: empty
	id  uint16
	sum digest
}

type digest [16]byte

const (
	recentSize  = 4096
	slotSize    = 8 + 2 + 16
	recentMagic = "EDGERCT1"
	headerSize  = len(recentMagic) + 16
	// maxSeq is far beyond any count of messages, and far from overflow.
	maxSeq = 1 << 62
)

// digestOf is a message's identity besides its packet ID.
func digestOf(topic string, payload []byte) digest {
	h := sha256.New()
	h.Write([]byte(topic))
	h.Write([]byte{0})
	h.Write(payload)
	var d digest
	copy(d[:], h.Sum(nil))
	return d
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
		s := slot{seq: binary.BigEndian.Uint64(b[off:]), id: binary.BigEndian.Uint16(b[off+8:])}
		copy(s.sum[:], b[off+10:off+slotSize])
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

// has reports whether a message with packet ID id and digest sum is among
// the recent ones.
func (r *recent) has(id uint16, sum digest) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	seq, ok := r.byID[id]
	if !ok || r.next-seq > recentSize {
		return false
	}
	s := r.slots[seq%recentSize]
	return s.seq == seq && s.sum == sum
}

// add records messages just queued, in order, and writes them out.
func (r *recent) add(ids []uint16, sums []digest) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	first := r.next
	for i, id := range ids {
		seq := r.next
		r.next++
		old := r.slots[seq%recentSize]
		if old.seq != 0 && r.byID[old.id] == old.seq {
			delete(r.byID, old.id)
		}
		r.slots[seq%recentSize] = slot{seq: seq, id: id, sum: sums[i]}
		r.byID[id] = seq
	}
	if r.f == nil || first == r.next {
		return nil
	}
	// The new slots: one run of the ring, or two when it wraps.
	var errs []error
	for seq := first; seq < r.next; {
		start := seq % recentSize
		n := min(r.next-seq, recentSize-start)
		buf := make([]byte, 0, n*slotSize)
		for i := range n {
			s := r.slots[start+i]
			buf = binary.BigEndian.AppendUint64(buf, s.seq)
			buf = binary.BigEndian.AppendUint16(buf, s.id)
			buf = append(buf, s.sum[:]...)
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
