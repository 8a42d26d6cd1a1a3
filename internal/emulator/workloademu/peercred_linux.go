package workloademu

import (
	"net"
	"syscall"
)

// peerPID reads the pid of the process that connected c (SO_PEERCRED), the
// caller identity aziot-edged checks (docs/edge-protocol.md#workload-api).
func peerPID(c net.Conn) (int32, bool) {
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return 0, false
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return 0, false
	}
	var cred *syscall.Ucred
	var credErr error
	if err := raw.Control(func(fd uintptr) {
		cred, credErr = syscall.GetsockoptUcred(int(fd), syscall.SOL_SOCKET, syscall.SO_PEERCRED)
	}); err != nil || credErr != nil {
		return 0, false
	}
	return cred.Pid, true
}
