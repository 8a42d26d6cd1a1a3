// Package queue is the relay's durable store-and-forward queue: a
// crash-safe FIFO of messages on disk with explicit acknowledgement. Once
// Append returns, its messages are fsync'd and reach the reader at least
// once, in Seq order, with the producer's ID, across edgeHub restarts,
// kill -9 and power loss. Ordering per source is the publisher's job; the
// queue is one FIFO by Seq.
//
// # On disk
//
// The folder (a container volume) holds:
//
//   - segment files named by their first Seq (00000000000000000001.seg):
//     an 8-byte header, then records of length, CRC-32C and body, with
//     consecutive Seqs; only the last one is appended to, and a new one
//     starts at SegmentSize;
//   - acked, the low watermark below which everything is acked or dropped,
//     in two slots overwritten in turn, so that a torn write spoils one;
//   - lock, flock'd while open, so that two relays never share a queue;
//   - damaged, when damage was found: the bytes of damaged records, named
//     by segment and offset, for whoever investigates.
//
// In memory the queue keeps one small struct per segment (first and last
// Seq, size, an offset every 256 records), never one per message: a
// million-message backlog costs kilobytes. Reads stream from the files.
//
// # Appending
//
// Appends are group-committed: each caller encodes its records, one
// writer goroutine takes every request that queued up while the previous
// fsync ran, writes them with one write and one fdatasync, and releases
// them all. There is no timer: a lone producer waits for one fsync, many
// share each one, the more so the slower the disk. A failed write or fsync
// (ENOSPC) is cut back off the file before the error is returned, so
// nothing half-written is ever read or survives a restart.
//
// # Acknowledging
//
// Acks may come in any order. Those above the watermark wait in memory;
// the watermark moves over every run of done Seqs and is saved every
// 100 ms and at Close. A segment is deleted once all its records are done,
// so space comes back a segment at a time. After a crash delivery resumes
// after the saved watermark: what was acked out of order above it, and up
// to 100 ms of acks below it, is delivered again, with the same ID.
//
// # Recovery
//
// Open checks every record of every segment. A record that is damaged
// (bad checksum, impossible length, seq out of line) costs that record
// only: recovery looks for the next good record after it, byte by byte
// since the damage may be in a length, accepting only one whose checksum
// holds and whose seq fits, and goes on from there. The seqs in between
// are done: never delivered, counted in Stats().Corrupt, and the damaged
// bytes are kept as evidence in the damaged folder (at most 32 files of
// 1 MiB), then zeroed in the segment, so that every later Open finds the
// same good records whatever is appended after them. A damaged header is written again: the name carries the seq. At
// damage that no good record follows (a write that a crash tore, above
// all) the file is cut, so that appends go on after the last good record;
// a crash can only tear the last segment, since a new one appears (by
// rename) only after the previous is fsync'd. Read meets damage that
// appears while the queue is open the same way: it skips, counts and keeps
// it, and goes on.
//
// # Bounds
//
// MaxBytes bounds the bytes from the oldest pending record on (Stats.Bytes):
// what the disk must hold. At the bound, Backpressure refuses with ErrFull
// and DropOldest drops from the front (reason "full"). Messages past
// Expires or older than MaxAge are dropped (reasons "expired", "age") as
// Read passes them, and from the front every 100 ms and before ErrFull.
//
// # Why a segment log and not bbolt
//
// Both were measured with the same record encoding, 256-byte bodies, on
// the 2-core Debian 12 VM (ext4 on virtio, fdatasync ≈ 0.2 ms), bbolt
// v1.4.3 with db.Batch (MaxBatchDelay 1 ms; bench_bbolt_test.go):
//
//	go test -run '^$' -bench Append -benchtime 3s ./module/queue
//	durable appends        segment log               bbolt
//	1 producer             6,500/s   1.0 fsync/msg   710/s    2.0 fsync/msg (3,700/s with MaxBatchDelay 0)
//	8 producers           25,500/s   0.25            5,300/s  0.25
//	64 producers         170,000/s   0.031          39,000/s  0.031
//
//	go test -run '^$' -bench 'Backlog$' -benchtime 1x ./module/queue (one process each)
//	1,000,000 messages                   segment log             bbolt
//	fill (8 producers, 100 per Append)   870,000-935,000/s       190,000-210,000/s
//	disk per message                     339 B                   844 B
//	RSS after filling (7.3 MB at start)  8.9 MB (heap 1.7 MB)    36 MB
//	reopen, files evicted from cache     0.5 s (checks all)      1 ms
//	drain after reopen (Read+Ack 1000)   2,300,000-2,500,000/s   75,000-82,000/s
//	RSS while draining                   8.9 MB                  800 MB (797 MB of it the mmap'd file)
//
// bbolt commits with two fsyncs (pages, then meta), keeps a B+tree of
// 2.5× the data and maps the whole file, so draining a backlog makes all
// of it resident; the segment log appends and reads sequentially. bbolt
// reopens instantly, where the segment log reads every record once
// (≈ 700 MB/s here); that is the price of checking every checksum and it
// warms the cache for the drain that follows.
package queue
