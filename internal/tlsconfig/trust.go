// Package tlsconfig builds every TLS client configuration of the product:
// which roots to trust (the system's, plus a CA file for private endpoints
// and the lab, or IoT Edge's trust bundle), which name the server's
// certificate must carry, TLS 1.2 at least, and the HTTP client for HTTPS
// calls to DPS and IoT Hub. Certificates are always verified; there is no
// way to turn that off.
package tlsconfig

import (
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"os"
	"syscall"
)

// MaxCAFile bounds a CA file: a bundle of a few hundred certificates is
// well under it.
const MaxCAFile = 1 << 20

// TrustFile returns the system's CA pool plus the certificates in the PEM
// file caFile (private endpoints, the lab's CA), or nil, meaning the
// system's, when caFile is empty. Clients of DPS, IoT Hub, edgeHub and
// local MQTT brokers all trust this way. The file is read on every call,
// so a renewed one is picked up by the next connection that asks.
//
// Whoever writes a module twin names the CA files of the relay's sources,
// so only a regular file of at most MaxCAFile bytes is read: a FIFO would
// block the caller for ever, and a device such as /dev/zero would be read
// until memory ran out.
func TrustFile(caFile string) (*x509.CertPool, error) {
	if caFile == "" {
		return nil, nil
	}
	b, err := readCAFile(caFile)
	if err != nil {
		return nil, err
	}
	pool, err := x509.SystemCertPool()
	if err != nil {
		pool = x509.NewCertPool()
	}
	if !pool.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("CA file %s holds no PEM certificate", caFile)
	}
	return pool, nil
}

// readCAFile reads caFile if it is a regular file of at most MaxCAFile
// bytes. It is opened without blocking (a FIFO without a writer would
// block the open) and checked on the open file, which cannot change
// under the check.
func readCAFile(caFile string) ([]byte, error) {
	f, err := os.OpenFile(caFile, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, fmt.Errorf("read CA file: %w", err) // err names the file
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("read CA file: %w", err)
	}
	switch {
	case fi.IsDir():
		return nil, fmt.Errorf("read CA file %s: is a directory", caFile)
	case !fi.Mode().IsRegular():
		return nil, fmt.Errorf("read CA file %s: not a regular file (%v)", caFile, fi.Mode().Type())
	case fi.Size() > MaxCAFile:
		return nil, fmt.Errorf("read CA file %s: larger than %d bytes", caFile, MaxCAFile)
	}
	// The size may grow while it is read.
	b, err := io.ReadAll(io.LimitReader(f, MaxCAFile+1))
	if err != nil {
		return nil, fmt.Errorf("read CA file: %w", err)
	}
	if len(b) > MaxCAFile {
		return nil, fmt.Errorf("read CA file %s: larger than %d bytes", caFile, MaxCAFile)
	}
	return b, nil
}

// TrustBundle returns a pool of the certificates in bundle alone, without
// the system's: IoT Edge's workload API hands a module the trust bundle
// that edgeHub's certificate chains to.
func TrustBundle(bundle []byte) (*x509.CertPool, error) {
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(bundle) {
		return nil, errors.New("the trust bundle holds no PEM certificate")
	}
	return pool, nil
}
