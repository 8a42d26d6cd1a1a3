package dps

import (
	"crypto/tls"
	"crypto/x509"
	"net/http"
	"time"
)

// NewHTTPClient returns the HTTP client a DPS Client uses: the proxy from
// HTTPS_PROXY/NO_PROXY (factory networks), certificates verified against
// roots (nil means the system's), TLS 1.2 at least, and 30 s per request
// like the Node SDK and IoT Edge (docs/dps-protocol.md#registering-and-polling).
func NewHTTPClient(roots *x509.CertPool) *http.Client {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}
	return &http.Client{Transport: tr, Timeout: 30 * time.Second}
}
