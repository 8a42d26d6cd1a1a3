//go:build linux

package queue

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/rs/zerolog"
)

// benchMsg is a typical relayed reading: a 256-byte body.
func benchMsg(i int) *Message {
	return &Message{
		ID:          fmt.Sprintf("bench-%010d", i),
		Source:      "mqtt:press",
		Output:      "telemetry",
		ContentType: "application/json",
		Body:        make([]byte, 256),
	}
}

// store is what the benchmarks need of a queue, so that the segment log
// and the bbolt variant run the same loads.
type store interface {
	Append(ctx context.Context, msgs ...*Message) error
	Read(ctx context.Context, after uint64, max int) ([]*Message, error)
	Ack(seqs ...uint64) error
	Close() error
	// syncCount is fsyncs so far.
	syncCount() int64
	diskBytes() int64
}

func (q *Queue) syncCount() int64 { return q.syncs.Load() }
func (q *Queue) diskBytes() int64 { return q.Stats().DiskBytes }

func openSegmentLog(b *testing.B, dir string) store {
	q, err := Open(Options{Dir: dir, MaxBytes: 4 << 30, Log: zerolog.Nop()})
	if err != nil {
		b.Fatal(err)
	}
	return q
}

func BenchmarkAppend(b *testing.B) { benchAppend(b, openSegmentLog) }

// benchAppend appends b.N messages, one per Append, from 1, 8 and 64
// producers: durable throughput and how well commits group.
func benchAppend(b *testing.B, open func(*testing.B, string) store) {
	for _, producers := range []int{1, 8, 64} {
		b.Run(fmt.Sprintf("producers=%d", producers), func(b *testing.B) {
			q := open(b, b.TempDir())
			defer q.Close()
			var next atomic.Int64
			var wg sync.WaitGroup
			b.ResetTimer()
			start := time.Now()
			for range producers {
				wg.Go(func() {
					for i := next.Add(1); i <= int64(b.N); i = next.Add(1) {
						if err := q.Append(context.Background(), benchMsg(int(i))); err != nil {
							b.Error(err)
							return
						}
					}
				})
			}
			wg.Wait()
			elapsed := time.Since(start)
			b.ReportMetric(float64(b.N)/elapsed.Seconds(), "msgs/s")
			b.ReportMetric(float64(q.syncCount())/float64(b.N), "fsyncs/msg")
		})
	}
}

func BenchmarkBacklog(b *testing.B) { benchBacklog(b, openSegmentLog) }

const backlog = 1_000_000

// benchBacklog fills a queue with a million messages while nothing is
// delivered, reopens it as after a restart, then drains it: the memory
// that costs, the rates, and the disk used.
func benchBacklog(b *testing.B, open func(*testing.B, string) store) {
	for range b.N {
		dir := b.TempDir()
		q := open(b, dir)
		base := memory()

		// Fill as the relay would: batches of 100 from 8 producers.
		const producers, batch = 8, 100
		start := time.Now()
		var wg sync.WaitGroup
		var next atomic.Int64
		for range producers {
			wg.Go(func() {
				for i := next.Add(batch) - batch; i < backlog; i = next.Add(batch) - batch {
					msgs := make([]*Message, batch)
					for j := range msgs {
						msgs[j] = benchMsg(int(i) + j)
					}
					if err := q.Append(context.Background(), msgs...); err != nil {
						b.Error(err)
						return
					}
				}
			})
		}
		wg.Wait()
		fill := time.Since(start)
		filled := memory()
		disk := q.diskBytes()
		if err := q.Close(); err != nil {
			b.Fatal(err)
		}

		// After a reboot nothing is cached: recovery reads from the disk.
		dropCache(b, dir)
		start = time.Now()
		q = open(b, dir)
		reopen := time.Since(start)
		reopened := memory()

		start = time.Now()
		var after uint64
		peak := reopened
		for n := 0; n < backlog; {
			msgs, err := q.Read(context.Background(), after, 1000)
			if err != nil {
				b.Fatal(err)
			}
			seqs := make([]uint64, len(msgs))
			for i, m := range msgs {
				seqs[i] = m.Seq
			}
			if err := q.Ack(seqs...); err != nil {
				b.Fatal(err)
			}
			after = seqs[len(seqs)-1]
			if n/100_000 != (n+len(msgs))/100_000 {
				peak = peak.max(memory())
			}
			n += len(msgs)
		}
		drain := time.Since(start)
		q.Close()

		b.ReportMetric(backlog/fill.Seconds(), "fill-msgs/s")
		b.ReportMetric(backlog/drain.Seconds(), "drain-msgs/s")
		b.ReportMetric(reopen.Seconds(), "reopen-s")
		b.ReportMetric(float64(disk)/backlog, "disk-B/msg")
		b.ReportMetric(base.rssMB(), "base-rss-MB")
		b.ReportMetric(filled.rssMB(), "filled-rss-MB")
		b.ReportMetric(reopened.rssMB(), "reopened-rss-MB")
		b.ReportMetric(peak.rssMB(), "draining-rss-MB")
		b.ReportMetric(peak.fileMB(), "draining-rss-file-MB")
		b.ReportMetric(float64(filled.heap)/(1<<20), "filled-heap-MB")
	}
}

// dropCache evicts the files in dir from the page cache.
func dropCache(b *testing.B, dir string) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		b.Fatal(err)
	}
	for _, e := range ents {
		f, err := os.Open(filepath.Join(dir, e.Name()))
		if err != nil {
			b.Fatal(err)
		}
		const fadvDontNeed = 4
		if _, _, errno := syscall.Syscall6(syscall.SYS_FADVISE64, f.Fd(), 0, 0, fadvDontNeed, 0, 0); errno != 0 {
			b.Fatalf("fadvise %s: %v", f.Name(), errno)
		}
		f.Close()
	}
}

// mem is resident memory: anonymous (heap, stacks) and file-backed (mmap).
type mem struct{ anon, file, heap uint64 }

func (m mem) rssMB() float64  { return float64(m.anon+m.file) / (1 << 20) }
func (m mem) fileMB() float64 { return float64(m.file) / (1 << 20) }
func (m mem) max(o mem) mem {
	if o.anon+o.file > m.anon+m.file {
		return o
	}
	return m
}

// memory measures after a GC that returns what it can to the OS, so that
// what remains is what the queue holds.
func memory() mem {
	runtime.GC()
	debug.FreeOSMemory()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	m := mem{heap: ms.HeapInuse}
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return m
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, _ := strings.Cut(sc.Text(), ":")
		kb, _ := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		switch k {
		case "RssAnon":
			m.anon = kb << 10
		case "RssFile":
			m.file = kb << 10
		}
	}
	return m
}
