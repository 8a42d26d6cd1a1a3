// Package tlsconfig builds the TLS client configurations of the product:
// which roots to trust (the system's, plus a CA file for private endpoints
// and the lab) for DPS, IoT Hub, edgeHub and local MQTT brokers.
package tlsconfig

import (
	"crypto/x509"
	"fmt"
	"os"
)

// TrustFile returns the system's CA pool plus the certificates in the PEM
// file caFile (private endpoints, the lab's CA), or nil, meaning the
// system's, when caFile is empty. Clients of DPS, IoT Hub and edgeHub all
// trust this way.
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
		return nil, fmt.Errorf("read CA file: %w", err)
	}
	if !pool.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("CA file %s holds no PEM certificate", caFile)
	}
	return pool, nil
}
