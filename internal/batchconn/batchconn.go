// Package batchconn wraps a connection so that a client writing one small
// packet per call (paho writes every MQTT packet with its own Write, a
// system call and, over TLS, a record each) sends what piles up while the
// previous write is on the wire in one write, and reads through a buffer
// (paho reads a packet's header a byte at a time). Like a group commit, it
// adds no delay: an idle connection writes at once.
package batchconn

import (
	"bufio"
	"net"
	"runtime"
	"sync"
	"time"
)

const (
	// maxPending bounds what Write holds before it waits for the wire.
	maxPending = 256 << 10
	// closeFlush bounds how long Close tries to send what is pending (a
	// DISCONNECT, acknowledgements) before closing anyway.
	closeFlush = time.Second
)

// Conn is a net.Conn with batched writes and buffered reads. A write error
// is returned by the Write calls after it.
type Conn struct {
	net.Conn
	r *bufio.Reader

	mu      sync.Mutex
	cond    sync.Cond
	pending []byte
	err     error
	closing bool
	done    chan struct{} // closed when the writer has stopped

	closeOnce sync.Once
	closeErr  error
}

// New wraps c and starts its writer; Close stops it.
func New(c net.Conn) *Conn {
	bc := &Conn{Conn: c, r: bufio.NewReaderSize(c, 32<<10), done: make(chan struct{})}
	bc.cond.L = &bc.mu
	go bc.write()
	return bc
}

// Read reads through the buffer.
func (c *Conn) Read(p []byte) (int, error) { return c.r.Read(p) }

// Write queues p for the writer and returns, waiting only while too much
// is pending.
func (c *Conn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for c.err == nil && !c.closing && len(c.pending) >= maxPending {
		c.cond.Wait()
	}
	if c.err != nil {
		return 0, c.err
	}
	if c.closing {
		return 0, net.ErrClosed
	}
	c.pending = append(c.pending, p...)
	c.cond.Broadcast()
	return len(p), nil
}

// write sends what is pending, all of it in one write, until an error or
// Close with nothing left.
func (c *Conn) write() {
	defer close(c.done)
	var out []byte
	c.mu.Lock()
	defer c.mu.Unlock()
	for {
		for len(c.pending) == 0 && c.err == nil && !c.closing {
			c.cond.Wait()
		}
		if c.err != nil || len(c.pending) == 0 {
			return
		}
		// Let the writers that are ready add theirs first.
		c.mu.Unlock()
		runtime.Gosched()
		c.mu.Lock()
		out, c.pending = c.pending, out[:0]
		c.cond.Broadcast()
		c.mu.Unlock()
		_, err := c.Conn.Write(out)
		c.mu.Lock()
		if err != nil {
			c.err = err
			c.cond.Broadcast()
		}
	}
}

// Close sends what is pending, for at most a second, and closes the
// connection.
func (c *Conn) Close() error {
	c.closeOnce.Do(func() {
		c.mu.Lock()
		c.closing = true
		c.cond.Broadcast()
		c.mu.Unlock()
		_ = c.Conn.SetWriteDeadline(time.Now().Add(closeFlush))
		<-c.done
		c.closeErr = c.Conn.Close()
	})
	return c.closeErr
}
