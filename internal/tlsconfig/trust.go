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
	"os"
)

// TrustFile returns the system's CA pool plus the certificates in the PEM
// file caFile (private endpoints, the lab's CA), or nil, meaning the
// system's, when caFile is empty. Clients of DPS, IoT Hub, edgeHub and
// local MQTT brokers all trust this way. The file is read on every call,
// so a renewed one is picked up by the next connection that asks.
func TrustFile(caFile string) (*x509.CertPool, error) {
	if caFile == "" {
		return nil, nil
	}
	pool, err := x509.SystemCertPool()
	if err != nil {
		pool = x509.NewCertPool()
	}
	b, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("read CA file: %w", err) // err names the file
	}
	if !pool.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("CA file %s holds no PEM certificate", caFile)
	}
	return pool, nil
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
