//go:build linux

package queue

import (
	"context"
	"encoding/binary"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// boltQueue is the minimal queue on bbolt that the segment log was
// measured against: one bucket, the seq as big-endian key, the same
// record encoding as value, acks as deletes. Only for the benchmarks.
type boltQueue struct {
	db      *bolt.DB
	mu      sync.Mutex
	commits map[int]bool // tx IDs: each commit is two fdatasyncs
}

var boltBucket = []byte("q")

func openBolt(b *testing.B, dir string) store {
	db, err := bolt.Open(filepath.Join(dir, "queue.db"), 0o600, nil)
	if err != nil {
		b.Fatal(err)
	}
	// The default 10 ms makes a lone producer wait 10 ms per message.
	db.MaxBatchDelay = time.Millisecond
	if err := db.Update(func(tx *bolt.Tx) error {
		_, err := tx.CreateBucketIfNotExists(boltBucket)
		return err
	}); err != nil {
		b.Fatal(err)
	}
	return &boltQueue{db: db, commits: map[int]bool{}}
}

func (q *boltQueue) Append(_ context.Context, msgs ...*Message) error {
	return q.db.Batch(func(tx *bolt.Tx) error {
		bk := tx.Bucket(boltBucket)
		var key [8]byte
		var val []byte
		for _, m := range msgs {
			seq, err := bk.NextSequence()
			if err != nil {
				return err
			}
			binary.BigEndian.PutUint64(key[:], seq)
			val = appendRecord(val[:0], m, seq)
			if err := bk.Put(key[:], val); err != nil {
				return err
			}
			m.Seq = seq
		}
		q.mu.Lock()
		q.commits[tx.ID()] = true
		q.mu.Unlock()
		return nil
	})
}

func (q *boltQueue) Read(_ context.Context, after uint64, max int) ([]*Message, error) {
	var msgs []*Message
	err := q.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(boltBucket).Cursor()
		var key [8]byte
		binary.BigEndian.PutUint64(key[:], after+1)
		for k, v := c.Seek(key[:]); k != nil && len(msgs) < max; k, v = c.Next() {
			body, _, err := checkRecord(v)
			if err != nil {
				return err
			}
			m, err := decodeBody(body)
			if err != nil {
				return err
			}
			msgs = append(msgs, m)
		}
		return nil
	})
	return msgs, err
}

func (q *boltQueue) Ack(seqs ...uint64) error {
	return q.db.Update(func(tx *bolt.Tx) error {
		bk := tx.Bucket(boltBucket)
		var key [8]byte
		for _, s := range seqs {
			binary.BigEndian.PutUint64(key[:], s)
			if err := bk.Delete(key[:]); err != nil {
				return err
			}
		}
		return nil
	})
}

func (q *boltQueue) Close() error { return q.db.Close() }

func (q *boltQueue) syncCount() int64 {
	q.mu.Lock()
	defer q.mu.Unlock()
	return 2 * int64(len(q.commits))
}

func (q *boltQueue) diskBytes() int64 {
	fi, err := os.Stat(q.db.Path())
	if err != nil {
		return 0
	}
	return fi.Size()
}

func BenchmarkBoltAppend(b *testing.B)  { benchAppend(b, openBolt) }
func BenchmarkBoltBacklog(b *testing.B) { benchBacklog(b, openBolt) }
