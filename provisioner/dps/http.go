package dps

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/http"
	"os"
	"time"
)

// NewHTTPClient returns the HTTP client a DPS Client uses: the proxy from
// HTTPS_PROXY/NO_PROXY (factory networks), certificates verified against
// roots (nil means the system's), TLS 1.2 at least, and 30 s per request
// like the Node SDK and IoT Edge (dps-tpm.md §8.2).
func NewHTTPClient(roots *x509.CertPool) *http.Client {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}
	return &http.Client{Transport: tr, Timeout: 30 * time.Second}
}

// TrustFile returns the system's CA pool plus the certificates in the PEM
// file caFile (private endpoints, the local lab), nil (the system's) when
// caFile is empty.
func TrustFile(caFile string) (*x509.CertPool, error) {
	if caFile == "" {
		return nil, nil
	}
	pool, err := x509.SystemCertPool()
	if err != nil {
		pool = x509.NewCertPool()
	}
	pem, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("read CA file: %w", err)
	}
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("CA file %s holds no PEM certificate", caFile)
	}
	return pool, nil
}
