// Package tpmsim serves the reference TPM 2.0 simulator (go-tpm-tools'
// simulator, linked with cgo and libcrypto) in this process over the TCP
// protocol of Microsoft's TPM simulator (TpmTcpProtocol.h): a command port and a
// platform port, so other processes reach it as they would the simulator
// itself (mssim://HOST:PORT, TCTI mssim:host=HOST,port=PORT). It is for the lab and tests only:
// edge-deploy links it, edge-provisioner and edge-relay never do.
//
// Like the real simulator it starts powered off: commands get an empty
// answer until a client sends POWER_ON to the platform port.
package tpmsim

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"sync"

	"github.com/google/go-tpm-tools/simulator"
)

// Codes of the protocol (TpmTcpProtocol.h).
const (
	// Command port.
	SendCommand     = 8
	RemoteHandshake = 15
	SessionEnd      = 20
	Stop            = 21

	// Platform port.
	PowerOn  = 1
	PowerOff = 2
	NVOn     = 11
	Reset    = 17
)

const maxCommand = 1 << 16

// Server serves one simulator. Commands from all connections are run one at
// a time.
type Server struct {
	mu  sync.Mutex
	sim *simulator.Simulator
	on  bool
}

// New returns a server for sim, powered off.
func New(sim *simulator.Simulator) *Server { return &Server{sim: sim} }

// Serve accepts connections on the command and platform listeners until ctx
// ends, then closes them and waits for its connections to finish.
func (s *Server) Serve(ctx context.Context, command, platform net.Listener) error {
	var wg sync.WaitGroup
	var mu sync.Mutex
	conns := map[net.Conn]bool{}
	accept := func(l net.Listener, handle func(net.Conn) error) {
		defer wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns[c] = true
			mu.Unlock()
			wg.Go(func() {
				_ = handle(c)
				c.Close()
				mu.Lock()
				delete(conns, c)
				mu.Unlock()
			})
		}
	}
	wg.Add(2)
	go accept(command, s.command)
	go accept(platform, s.platform)
	<-ctx.Done()
	command.Close()
	platform.Close()
	mu.Lock()
	for c := range conns {
		c.Close()
	}
	mu.Unlock()
	wg.Wait()
	return nil
}

func (s *Server) command(c net.Conn) error {
	for {
		var code uint32
		if err := binary.Read(c, binary.BigEndian, &code); err != nil {
			return err
		}
		switch code {
		case SendCommand:
			var hdr struct {
				Locality uint8
				Size     uint32
			}
			if err := binary.Read(c, binary.BigEndian, &hdr); err != nil {
				return err
			}
			if hdr.Size > maxCommand {
				return fmt.Errorf("command of %d bytes", hdr.Size)
			}
			cmd := make([]byte, hdr.Size)
			if _, err := io.ReadFull(c, cmd); err != nil {
				return err
			}
			rsp, err := s.run(cmd)
			if err != nil {
				return err
			}
			out := binary.BigEndian.AppendUint32(nil, uint32(len(rsp)))
			out = append(out, rsp...)
			if _, err := c.Write(binary.BigEndian.AppendUint32(out, 0)); err != nil {
				return err
			}
		case RemoteHandshake:
			var clientVersion uint32
			if err := binary.Read(c, binary.BigEndian, &clientVersion); err != nil {
				return err
			}
			// Server version 1; flags: powered, locality, NV available.
			if err := binary.Write(c, binary.BigEndian, []uint32{1, 0x7, 0}); err != nil {
				return err
			}
		case SessionEnd, Stop:
			return nil
		default:
			return fmt.Errorf("unknown command-port code %d", code)
		}
	}
}

// run executes one TPM command; powered off, the answer is empty.
func (s *Server) run(cmd []byte) ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.on {
		return nil, nil
	}
	if _, err := s.sim.Write(cmd); err != nil {
		return nil, err
	}
	var rsp bytes.Buffer
	if _, err := io.Copy(&rsp, s.sim); err != nil && !errors.Is(err, io.EOF) {
		return nil, err
	}
	return rsp.Bytes(), nil
}

func (s *Server) platform(c net.Conn) error {
	for {
		var code uint32
		if err := binary.Read(c, binary.BigEndian, &code); err != nil {
			return err
		}
		var err error
		s.mu.Lock()
		switch code {
		case PowerOn:
			// The simulator package starts the TPM as it powers it on, so
			// a client's TPM2_Startup gets TPM_RC_INITIALIZE, as after a
			// firmware that started it.
			if !s.on {
				err = s.sim.Reset()
				s.on = err == nil
			}
		case PowerOff:
			s.on = false
		case Reset:
			if s.on {
				err = s.sim.Reset()
			}
		case SessionEnd, Stop:
			s.mu.Unlock()
			return nil
		}
		// NV, physical presence, cancel and locality codes need nothing.
		s.mu.Unlock()
		status := uint32(0)
		if err != nil {
			status = 1
		}
		if err := binary.Write(c, binary.BigEndian, status); err != nil {
			return err
		}
	}
}

// Listen listens on two adjacent free TCP ports of host: the command port P
// and the platform port P+1, since clients (provisioner/tpm, swtpm's,
// tss.js) derive the one from the other.
func Listen(host string) (command, platform net.Listener, err error) {
	for range 20 {
		command, err = net.Listen("tcp", net.JoinHostPort(host, "0"))
		if err != nil {
			return nil, nil, err
		}
		port := command.Addr().(*net.TCPAddr).Port
		platform, err = net.Listen("tcp", net.JoinHostPort(host, strconv.Itoa(port+1)))
		if err == nil {
			return command, platform, nil
		}
		command.Close()
	}
	return nil, nil, fmt.Errorf("no two adjacent free ports on %s: %w", host, err)
}

// Served is a simulator served on loopback by Start.
type Served struct {
	// URI opens it with provisioner/tpm: mssim://127.0.0.1:PORT.
	URI string

	sim    *simulator.Simulator
	cancel context.CancelFunc
	done   chan error
}

// Start serves sim, powered off, on two adjacent loopback ports until
// Close. Close also closes sim.
func Start(sim *simulator.Simulator) (*Served, error) {
	cmdL, platL, err := Listen("127.0.0.1")
	if err != nil {
		sim.Close()
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &Served{URI: "mssim://" + cmdL.Addr().String(), sim: sim, cancel: cancel, done: make(chan error, 1)}
	go func() { s.done <- New(sim).Serve(ctx, cmdL, platL) }()
	return s, nil
}

// Close stops serving and closes the simulator.
func (s *Served) Close() error {
	s.cancel()
	err := <-s.done
	if cerr := s.sim.Close(); err == nil {
		err = cerr
	}
	return err
}
