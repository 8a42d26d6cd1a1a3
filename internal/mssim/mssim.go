// Package mssim holds the codes of the TCP protocol of Microsoft's TPM 2.0
// reference simulator (TpmTcpProtocol.h), which swtpm also speaks on its
// server port: a command port for TPM commands and a platform port, at the
// next port number, for power and NV. provisioner/tpm speaks it as a client
// and the lab's in-process TPM (internal/emulator/tpmsim) as a server; this
// package links no simulator.
package mssim

// Command-port codes.
const (
	SendCommand     = 8
	RemoteHandshake = 15
	SessionEnd      = 20
	Stop            = 21
)

// Platform-port codes.
const (
	PowerOn  = 1
	PowerOff = 2
	NVOn     = 11
	Reset    = 17
)
