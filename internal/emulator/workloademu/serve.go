package workloademu

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log"
	"net"
	"net/http"
	"os"
	"sync"
	"time"
)

// shutdownGrace is how long Serve lets requests in flight finish once its
// context ends, before it cuts their connections.
const shutdownGrace = 2 * time.Second

// Serve listens on a Unix socket at socketPath and serves the workload API
// there until ctx ends; then it closes the socket, waits for its
// goroutines and removes the socket file. The socket is mode 0666, like
// aziot-edged's workload sockets (systemd SocketMode=0666, docs/edge-protocol.md#module-environment). A stale
// socket file is replaced; a live one, or a file that is not a socket, is
// an error. Serve returns nil when ctx ended.
func (s *Server) Serve(ctx context.Context, socketPath string) error {
	if err := removeStale(socketPath); err != nil {
		return err
	}
	ln, err := net.Listen("unix", socketPath)
	if err != nil {
		return fmt.Errorf("listen on workload socket %s: %w", socketPath, err)
	}
	defer os.Remove(socketPath)
	if err := os.Chmod(socketPath, 0o666); err != nil {
		ln.Close()
		return fmt.Errorf("open up workload socket %s: %w", socketPath, err)
	}
	srv := &http.Server{
		Handler: s.Handler(),
		// No header timeout: hyper has none either, so a stalled caller
		// holds its slot of the connection cap as it would against
		// aziot-edged.
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			if cc, ok := c.(*cappedConn); ok && cc.hasPID {
				return context.WithValue(ctx, pidKey{}, cc.pid)
			}
			return ctx
		},
		ErrorLog: log.New(s.log, "", 0),
	}
	s.log.Info().Str("socket", socketPath).Int("max_concurrent", s.max).Msg("workload API listening")
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(&capListener{Listener: ln, slots: make(chan struct{}, s.max), srv: s}) }()
	select {
	case err := <-errc:
		return fmt.Errorf("serve workload socket %s: %w", socketPath, err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), shutdownGrace)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		srv.Close()
	}
	<-errc // http.ErrServerClosed
	s.log.Info().Str("socket", socketPath).Msg("workload API stopped")
	return nil
}

// removeStale removes a socket file nobody listens on any more, as systemd
// does before it binds aziot-edged's sockets.
func removeStale(path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("check workload socket %s: %w", path, err)
	}
	if fi.Mode().Type() != fs.ModeSocket {
		return fmt.Errorf("workload socket %s: exists and is not a socket", path)
	}
	if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
		c.Close()
		return fmt.Errorf("workload socket %s: in use by another server", path)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove stale workload socket %s: %w", path, err)
	}
	return nil
}

// capListener hands out at most cap(slots) live connections and closes
// any beyond that at once, without an HTTP reply, as aziot-edged does with
// its per-socket semaphore (docs/edge-protocol.md#workload-api); callers retry.
type capListener struct {
	net.Listener
	slots chan struct{}
	srv   *Server
}

func (l *capListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		select {
		case l.slots <- struct{}{}:
		default:
			c.Close()
			l.srv.log.Debug().Int("max_concurrent", cap(l.slots)).Msg("connection refused: at capacity")
			continue
		}
		cc := &cappedConn{Conn: c, release: func() { <-l.slots }}
		// Read at accept time, as aziot-edged does before it serves.
		cc.pid, cc.hasPID = peerPID(c)
		return cc, nil
	}
}

// cappedConn frees its slot when closed, once.
type cappedConn struct {
	net.Conn
	pid     int32
	hasPID  bool
	release func()
	once    sync.Once
}

func (c *cappedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.release)
	return err
}

type pidKey struct{}

// pidFrom returns the peer pid Serve found for the request's connection.
func pidFrom(ctx context.Context) (int32, bool) {
	pid, ok := ctx.Value(pidKey{}).(int32)
	return pid, ok
}
