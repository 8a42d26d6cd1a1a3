package tpm

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
	"github.com/google/go-tpm/tpm2/transport/linuxtpm"
)

// DefaultURI is the kernel's TPM resource manager.
const DefaultURI = "device:/dev/tpmrm0"

// Errors callers branch on.
var (
	// ErrURI reports a TPM URI that cannot be used.
	ErrURI = errors.New("bad TPM URI")
	// ErrBusy reports a TPM whose single connection another process holds.
	ErrBusy = errors.New("TPM is held by another process")
	// ErrKind reports a URI that names one kind of simulator where another
	// answers.
	ErrKind = errors.New("TPM is not of the kind its URI names")
)

// OpenTransport opens the TPM that uri names, doing what tpm2-tss's TCTI
// for that kind (see TCTI) does when aziot-tpmd or tpm2-tools open it, so a
// TPM that opens here opens for them too:
//
//	device:/dev/tpmrm0  the kernel resource manager (or /dev/tpm0)
//	swtpm://HOST:PORT   swtpm: TPM commands on PORT, its control channel
//	                    on PORT+1
//	mssim://HOST:PORT   Microsoft's reference simulator: TPM commands on
//	                    PORT, its platform port on PORT+1
//
// A simulator is powered on and the TPM started when it is not yet. A
// simulator whose one connection another process holds fails within
// seconds with ErrBusy. The transport serializes commands and retries those
// the TPM asks to retry.
func OpenTransport(uri string) (transport.TPMCloser, error) {
	ep, err := parseURI(uri)
	if err != nil {
		return nil, err
	}
	var t transport.TPMCloser
	switch ep.kind {
	case kindDevice:
		t, err = linuxtpm.Open(ep.path)
		switch {
		case errors.Is(err, os.ErrNotExist):
			err = fmt.Errorf("%w: is there a TPM 2.0 and is its driver loaded?", err)
		case errors.Is(err, os.ErrPermission):
			err = fmt.Errorf("%w: run as root or as a member of the tss group", err)
		case errors.Is(err, syscall.EBUSY):
			err = fmt.Errorf("%w: %w: another process holds the raw TPM (tpm2-abrmd, aziot-tpmd or a tool given %s); use the kernel's resource manager, device:/dev/tpmrm0, which many may share",
				ErrBusy, err, ep.path)
		}
	case kindSwtpm:
		t, err = openSwtpm(ep)
	case kindMSSim:
		t, err = openMSSim(ep)
	}
	if err != nil {
		return nil, fmt.Errorf("open TPM %s: %w", ep, err)
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
	conn    net.Conn
	timeout time.Duration // for one command and its response
}

const (
	maxResponse = 1 << 16
	dialTimeout = 5 * time.Second
	// probeTimeout bounds the first command and the platform or control
	// channel's answers: a simulator that takes longer is serving another
	// connection, since swtpm and the reference simulator serve one at a time.
	probeTimeout = 5 * time.Second
	ioTimeout    = 2 * time.Minute // RSA key generation on a slow chip
)

// Codes of the TCP protocol of Microsoft's TPM 2.0 reference simulator
// (TpmTcpProtocol.h) that this client sends: TPM_SEND_COMMAND on the
// command port, TPM_SIGNAL_POWER_ON and TPM_SIGNAL_NV_ON on the platform
// port, which tpm2-tss's mssim TCTI sends at every start. internal/emulator/tpmsim
// serves the same protocol to the lab and tests;
// TestOpenPowersOnReferenceSimulator runs this client against it.
const (
	mssimSendCommand = 8
	mssimPowerOn     = 1
	mssimNVOn        = 11
)

// Commands of swtpm's control channel (swtpm's tpm_ioctl.h, CMD_*).
// tpm2-tss's swtpm TCTI sends SET_LOCALITY at every start.
const (
	swtpmGetCapability = 1
	swtpmInit          = 2
	swtpmSetLocality   = 5
)

var errPoweredOff = errors.New("TPM simulator returned an empty response: not powered on")

func (m *mssimConn) Send(cmd []byte) ([]byte, error) {
	if err := m.conn.SetDeadline(time.Now().Add(m.timeout)); err != nil {
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

// heldBy is the remedy for a simulator that does not answer in time.
func heldBy(ep endpoint, err error) error {
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		return err
	}
	return fmt.Errorf("%w: %s did not answer within %v, as when another process holds its one connection: aziot-tpmd (systemctl stop aziot-tpmd.socket aziot-tpmd), a running edge-relay (stop it, or the lab that runs it), or another tool (tpm2-tools, a second edge-provisioner); stop it and try again: %w",
		ErrBusy, ep, probeTimeout, err)
}

// dial connects to the simulator's command port, as tpm2-tss's TCTIs do
// first.
func dial(ep endpoint) (*mssimConn, error) {
	conn, err := net.DialTimeout("tcp", net.JoinHostPort(ep.host, strconv.Itoa(ep.port)), dialTimeout)
	if err != nil {
		return nil, err
	}
	return &mssimConn{conn: conn, timeout: probeTimeout}, nil
}

// openMSSim opens Microsoft's reference simulator as tpm2-tss's mssim TCTI
// does: POWER_ON and NV_ON on the platform port, which the simulator takes
// as no-ops once on, then commands.
func openMSSim(ep endpoint) (transport.TPMCloser, error) {
	m, err := dial(ep)
	if err != nil {
		return nil, err
	}
	if err := mssimPlatformOn(ep); err != nil {
		m.Close()
		return nil, heldBy(ep, err)
	}
	if err := startup(m, func() error { return errPoweredOff }); err != nil {
		m.Close()
		return nil, heldBy(ep, err)
	}
	m.timeout = ioTimeout
	return m, nil
}

func mssimPlatformOn(ep endpoint) error {
	conn, err := net.DialTimeout("tcp", ep.platform(), dialTimeout)
	if err != nil {
		return fmt.Errorf("platform port: %w", err)
	}
	defer conn.Close()
	if err := conn.SetDeadline(time.Now().Add(probeTimeout)); err != nil {
		return err
	}
	if err := platformCmd(conn, mssimPowerOn); err != nil {
		return fmt.Errorf("POWER_ON on the platform port %s: %w", ep.platform(), err)
	}
	// swtpm's control channel reads POWER_ON as GET_CAPABILITY and answers
	// a second word, which is then read as NV_ON's status: this is how
	// tpm2-tss's mssim TCTI fails on swtpm.
	if err := platformCmd(conn, mssimNVOn); err != nil {
		var st statusError
		if errors.As(err, &st) {
			return fmt.Errorf("%w: %s does not take NV_ON (%w), as when swtpm's control channel answers; for swtpm use swtpm://%s",
				ErrKind, ep.platform(), err, net.JoinHostPort(ep.host, strconv.Itoa(ep.port)))
		}
		return fmt.Errorf("NV_ON on the platform port %s: %w", ep.platform(), err)
	}
	return nil
}

// openSwtpm opens swtpm as tpm2-tss's swtpm TCTI does: SET_LOCALITY 0 on its
// control channel, then commands. A swtpm started without not-need-init is
// initialised with its own INIT. The command connection is kept until
// Close, so a command sequence (an activation, an HMAC sequence) is not
// interleaved with another process's; swtpm serves one connection at a time,
// and others wait for it meanwhile.
//
// The control channel is taken before the command connection, by every
// client alike, so two clients opening at once never hold one each.
func openSwtpm(ep endpoint) (transport.TPMCloser, error) {
	ctrl, err := swtpmControl(ep)
	if err != nil {
		return nil, heldBy(ep, err)
	}
	defer ctrl.Close()
	m, err := dial(ep)
	if err != nil {
		return nil, err
	}
	err = startup(m, func() error {
		if err := platformCmd(ctrl, swtpmInit, 0); err != nil { // flags 0
			return fmt.Errorf("swtpm INIT: %w", err)
		}
		return nil
	})
	if err != nil {
		m.Close()
		return nil, heldBy(ep, err)
	}
	m.timeout = ioTimeout
	return m, nil
}

// swtpmControl connects to swtpm's control channel and checks that it is
// one: GET_CAPABILITY answers a result and a capability word, where the
// reference simulator's platform port takes it as POWER_ON and answers one
// word.
func swtpmControl(ep endpoint) (net.Conn, error) {
	conn, err := net.DialTimeout("tcp", ep.platform(), dialTimeout)
	if err != nil {
		return nil, fmt.Errorf("control channel: %w", err)
	}
	fail := func(err error) (net.Conn, error) { conn.Close(); return nil, err }
	if err := conn.SetDeadline(time.Now().Add(probeTimeout)); err != nil {
		return fail(err)
	}
	if err := platformCmd(conn, swtpmGetCapability); err != nil {
		return fail(fmt.Errorf("GET_CAPABILITY on the control channel %s: %w", ep.platform(), err))
	}
	var caps [4]byte
	_ = conn.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
	if _, err := io.ReadFull(conn, caps[:]); err != nil {
		return fail(fmt.Errorf("%w: %s answers as the reference simulator's platform port, not swtpm's control channel; for Microsoft's reference simulator use mssim://%s",
			ErrKind, ep.platform(), net.JoinHostPort(ep.host, strconv.Itoa(ep.port))))
	}
	if err := conn.SetDeadline(time.Now().Add(probeTimeout)); err != nil {
		return fail(err)
	}
	if _, err := conn.Write([]byte{0, 0, 0, swtpmSetLocality, 0}); err != nil {
		return fail(err)
	}
	if err := readStatus(conn); err != nil {
		return fail(fmt.Errorf("SET_LOCALITY on the control channel %s: %w", ep.platform(), err))
	}
	return conn, nil
}

// startup brings a TPM to the operational state: already started is fine,
// TPM_RC_INITIALIZE asks for TPM2_Startup, and a TPM that is powered off
// (the reference simulator answers nothing, swtpm TPM_RC_FAILURE) is powered
// on first.
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

// statusError is a platform or control command's non-zero result.
type statusError uint32

func (e statusError) Error() string { return fmt.Sprintf("status %#x", uint32(e)) }

func platformCmd(conn net.Conn, words ...uint32) error {
	if err := binary.Write(conn, binary.BigEndian, words); err != nil {
		return err
	}
	return readStatus(conn)
}

func readStatus(conn net.Conn) error {
	var status uint32
	if err := binary.Read(conn, binary.BigEndian, &status); err != nil {
		return err
	}
	if status != 0 {
		return statusError(status)
	}
	return nil
}
