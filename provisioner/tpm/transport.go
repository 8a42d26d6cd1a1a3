package tpm

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
	"github.com/google/go-tpm/tpm2/transport/linuxtpm"
)

// DefaultURI is the kernel's TPM resource manager.
const DefaultURI = "device:/dev/tpmrm0"

// ErrURI reports a TPM URI that cannot be used.
var ErrURI = errors.New("bad TPM URI")

// OpenTransport opens the TPM that uri names:
//
//	device:/dev/tpmrm0  the kernel resource manager (or /dev/tpm0)
//	mssim://HOST:PORT   swtpm or the reference simulator over TCP; the
//	                    platform port is PORT+1
//
// The TPM is powered on and started when it is not yet. The transport
// serializes commands and retries those the TPM asks to retry.
func OpenTransport(uri string) (transport.TPMCloser, error) {
	if uri == "" {
		uri = DefaultURI
	}
	var (
		t   transport.TPMCloser
		err error
	)
	switch {
	case strings.HasPrefix(uri, "device:"):
		path := strings.TrimPrefix(uri, "device:")
		if path == "" || !strings.HasPrefix(path, "/") {
			return nil, fmt.Errorf("%w %q: want device:/dev/tpmrm0", ErrURI, uri)
		}
		t, err = linuxtpm.Open(path)
		if errors.Is(err, os.ErrNotExist) {
			err = fmt.Errorf("%w: is there a TPM 2.0 and is its driver loaded?", err)
		} else if errors.Is(err, os.ErrPermission) {
			err = fmt.Errorf("%w: run as root or as a member of the tss group", err)
		}
	case strings.HasPrefix(uri, "mssim://"):
		var u *url.URL
		if u, err = url.Parse(uri); err != nil || u.Host == "" || u.Port() == "" || (u.Path != "" && u.Path != "/") {
			return nil, fmt.Errorf("%w %q: want mssim://HOST:PORT", ErrURI, uri)
		}
		t, err = openMSSim(u.Hostname(), u.Port())
	default:
		return nil, fmt.Errorf("%w %q: want device:PATH or mssim://HOST:PORT", ErrURI, uri)
	}
	if err != nil {
		return nil, fmt.Errorf("open TPM %s: %w", uri, err)
	}
	return &serial{t: t}, nil
}

// serial serializes commands on one transport and retries the ones the TPM
// answers with TPM_RC_RETRY, TPM_RC_YIELDED, TPM_RC_TESTING or TPM_RC_NV_RATE
// (NV wear-out protection, which a key swap's NV writes can meet): the command did
// not run, and resending the same bytes is what the TPM asks for (TPM 2.0
// Part 1, §39.3 "Warnings").
type serial struct {
	mu sync.Mutex
	t  transport.TPMCloser
}

// retryDelays bound the retries to about two seconds.
var retryDelays = []time.Duration{5 * time.Millisecond, 20 * time.Millisecond, 50 * time.Millisecond, 100 * time.Millisecond, 250 * time.Millisecond, 500 * time.Millisecond, time.Second}

func (s *serial) Send(cmd []byte) ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := 0; ; i++ {
		rsp, err := s.t.Send(cmd)
		if err != nil || i == len(retryDelays) || !retryable(rsp) {
			return rsp, err
		}
		time.Sleep(retryDelays[i])
	}
}

func (s *serial) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.t.Close()
}

func retryable(rsp []byte) bool {
	if len(rsp) < 10 {
		return false
	}
	switch tpm2.TPMRC(binary.BigEndian.Uint32(rsp[6:10])) {
	case tpm2.TPMRCRetry, tpm2.TPMRCYielded, tpm2.TPMRCTesting, tpm2.TPMRCNVRate:
		return true
	}
	return false
}

// mssimConn speaks the TCP protocol of the reference simulator (TpmTcpProtocol.h)
// on the command port. swtpm accepts the same framing on its server port.
type mssimConn struct {
	conn net.Conn
}

const (
	maxResponse = 1 << 16
	dialTimeout = 5 * time.Second
	ioTimeout   = 2 * time.Minute // RSA key generation on a slow chip
)

// Codes of the TCP protocol of Microsoft's TPM 2.0 reference simulator
// (TpmTcpProtocol.h) that this client sends: TPM_SEND_COMMAND on the
// command port, TPM_SIGNAL_POWER_ON and TPM_SIGNAL_NV_ON on the platform
// port. internal/emulator/tpmsim serves the same protocol to the lab and
// tests; TestOpenPowersOnReferenceSimulator runs this client against it.
const (
	mssimSendCommand = 8
	mssimPowerOn     = 1
	mssimNVOn        = 11
)

// swtpmInit is swtpm's CMD_INIT on its control channel (swtpm's
// tpm_ioctl.h), which is not an mssim platform port.
const swtpmInit = 2

var errPoweredOff = errors.New("TPM simulator returned an empty response: not powered on")

func (m *mssimConn) Send(cmd []byte) ([]byte, error) {
	if err := m.conn.SetDeadline(time.Now().Add(ioTimeout)); err != nil {
		return nil, err
	}
	hdr := make([]byte, 9, 9+len(cmd))
	binary.BigEndian.PutUint32(hdr, mssimSendCommand)
	hdr[4] = 0 // locality
	binary.BigEndian.PutUint32(hdr[5:], uint32(len(cmd)))
	if _, err := m.conn.Write(append(hdr, cmd...)); err != nil {
		return nil, fmt.Errorf("send TPM command: %w", err)
	}
	var n uint32
	if err := binary.Read(m.conn, binary.BigEndian, &n); err != nil {
		return nil, fmt.Errorf("read TPM response size: %w", err)
	}
	if n > maxResponse {
		return nil, fmt.Errorf("TPM response of %d bytes is too large", n)
	}
	rsp := make([]byte, n+4) // response, then the simulator's 4-byte status
	if _, err := io.ReadFull(m.conn, rsp); err != nil {
		return nil, fmt.Errorf("read TPM response: %w", err)
	}
	if n == 0 {
		return nil, errPoweredOff
	}
	return rsp[:n], nil
}

func (m *mssimConn) Close() error { return m.conn.Close() }

func openMSSim(host, port string) (transport.TPMCloser, error) {
	p, err := strconv.Atoi(port)
	if err != nil || p <= 0 || p >= 65535 {
		return nil, fmt.Errorf("%w: port %q", ErrURI, port)
	}
	conn, err := net.DialTimeout("tcp", net.JoinHostPort(host, port), dialTimeout)
	if err != nil {
		return nil, err
	}
	m := &mssimConn{conn: conn}
	if err := startup(m, func() error { return powerOn(net.JoinHostPort(host, strconv.Itoa(p+1))) }); err != nil {
		m.Close()
		return nil, err
	}
	return m, nil
}

// startup brings a TPM to the operational state: already started is fine,
// TPM_RC_INITIALIZE asks for TPM2_Startup, and a TPM that is powered off
// (the reference simulator answers nothing, swtpm TPM_RC_FAILURE) is powered
// on through the platform port first.
func startup(t transport.TPM, powerOn func() error) error {
	probe := tpm2.GetCapability{Capability: tpm2.TPMCapTPMProperties, Property: uint32(tpm2.TPMPTManufacturer), PropertyCount: 1}
	_, err := probe.Execute(t)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, errPoweredOff), errors.Is(err, tpm2.TPMRCFailure):
		if err := powerOn(); err != nil {
			return fmt.Errorf("power on: %w", err)
		}
	case errors.Is(err, tpm2.TPMRCInitialize):
	default:
		return err
	}
	_, err = tpm2.Startup{StartupType: tpm2.TPMSUClear}.Execute(t)
	if err != nil && !errors.Is(err, tpm2.TPMRCInitialize) {
		return fmt.Errorf("TPM2_Startup: %w", err)
	}
	return nil
}

// powerOn powers on the TPM behind a platform port. The reference simulator
// answers POWER_ON (1) with a 4-byte status and then needs NV_ON (11). swtpm's
// control channel reads 1 as GET_CAPABILITY and answers 8 bytes; it is then
// started with its own INIT (2) command.
func powerOn(addr string) error {
	conn, err := net.DialTimeout("tcp", addr, dialTimeout)
	if err != nil {
		return err
	}
	defer conn.Close()
	if err := conn.SetDeadline(time.Now().Add(10 * time.Second)); err != nil {
		return err
	}
	if err := platformCmd(conn, mssimPowerOn); err != nil {
		return fmt.Errorf("POWER_ON: %w", err)
	}
	// Tell the two apart by whether a second word follows.
	var caps [4]byte
	_ = conn.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	_, err = io.ReadFull(conn, caps[:])
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	if err == nil {
		if err := platformCmd(conn, swtpmInit, 0); err != nil { // flags 0
			return fmt.Errorf("swtpm INIT: %w", err)
		}
		return nil
	}
	if err := platformCmd(conn, mssimNVOn); err != nil {
		return fmt.Errorf("NV_ON: %w", err)
	}
	return nil
}

func platformCmd(conn net.Conn, words ...uint32) error {
	if err := binary.Write(conn, binary.BigEndian, words); err != nil {
		return err
	}
	var status uint32
	if err := binary.Read(conn, binary.BigEndian, &status); err != nil {
		return err
	}
	if status != 0 {
		return fmt.Errorf("status %#x", status)
	}
	return nil
}
