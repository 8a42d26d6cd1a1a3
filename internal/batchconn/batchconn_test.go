package batchconn

import (
	"bytes"
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// pair returns both ends of a loopback TCP connection, the dialed one
// counting its writes.
func pair(t *testing.T) (*counting, net.Conn) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := l.Accept()
		accepted <- c
	}()
	c, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	peer := <-accepted
	if peer == nil {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { c.Close(); peer.Close() })
	return &counting{Conn: c}, peer
}

type counting struct {
	net.Conn
	writes atomic.Int64
	gate   chan struct{} // when set, each write waits for it
}

func (c *counting) Write(p []byte) (int, error) {
	if c.gate != nil {
		<-c.gate
	}
	c.writes.Add(1)
	return c.Conn.Write(p)
}

// Packets written while the wire is busy go out together, in order, and
// nothing is lost or repeated.
func TestBatchesInOrder(t *testing.T) {
	raw, peer := pair(t)
	raw.gate = make(chan struct{})
	c := New(raw)
	const packets = 1000
	var want bytes.Buffer
	for i := range packets {
		p := []byte{byte(i >> 8), byte(i), 0xaa, 0x55}
		want.Write(p)
		if _, err := c.Write(p); err != nil {
			t.Fatal(err)
		}
	}
	close(raw.gate) // the wire frees up: the first write, then the rest
	got := make([]byte, want.Len())
	if _, err := io.ReadFull(peer, got); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want.Bytes()) {
		t.Fatal("bytes differ from what was written, in order")
	}
	if n := raw.writes.Load(); n > 2 {
		t.Errorf("%d packets took %d writes, want at most 2", packets, n)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Write([]byte{1}); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Write after Close = %v, want net.ErrClosed", err)
	}
}

// Close sends what is pending before it closes.
func TestCloseFlushes(t *testing.T) {
	raw, peer := pair(t)
	c := New(raw)
	msg := bytes.Repeat([]byte("disconnect"), 1000)
	if _, err := c.Write(msg); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(peer)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, msg) {
		t.Fatalf("peer read %d bytes before EOF, want %d", len(got), len(msg))
	}
}

// A peer that reads nothing holds Write back once maxPending is queued,
// and Close still returns, about a second later, releasing the writers.
func TestStalledPeer(t *testing.T) {
	raw, _ := pair(t)
	c := New(raw)
	var wg sync.WaitGroup
	var werr error
	wg.Go(func() {
		chunk := make([]byte, 64<<10)
		for {
			if _, err := c.Write(chunk); err != nil {
				werr = err
				return
			}
		}
	})
	time.Sleep(200 * time.Millisecond) // the kernel's buffers fill
	start := time.Now()
	c.Close()
	if d := time.Since(start); d > closeFlush+2*time.Second {
		t.Errorf("Close took %v with a stalled peer", d)
	}
	wg.Wait()
	if werr == nil {
		t.Error("Write went on after Close")
	}
}

// A write error comes back from the next Writes.
func TestWriteError(t *testing.T) {
	raw, peer := pair(t)
	c := New(raw)
	defer c.Close()
	peer.(*net.TCPConn).SetLinger(0)
	peer.Close() // a reset: writes fail
	deadline := time.Now().Add(5 * time.Second)
	for {
		_, err := c.Write(make([]byte, 1024))
		if err != nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("Write never reported the reset")
		}
		time.Sleep(time.Millisecond)
	}
}

// Reads go through the buffer: a byte at a time returns the stream.
func TestReadBuffered(t *testing.T) {
	raw, peer := pair(t)
	c := New(raw)
	defer c.Close()
	want := []byte("\x30\x05a/b/c")
	peer.Write(want)
	got := make([]byte, 0, len(want))
	b := make([]byte, 1)
	for len(got) < len(want) {
		if _, err := c.Read(b); err != nil {
			t.Fatal(err)
		}
		got = append(got, b[0])
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("read %q, want %q", got, want)
	}
}
