package dps

import (
	"crypto/x509"
	"net/http"
	"time"

	"github.com/edgetpm/edgetpm/internal/tlsconfig"
)

// NewHTTPClient returns the HTTP client a DPS Client uses: the product's
// HTTPS client (tlsconfig.HTTPClient: proxy from HTTPS_PROXY/NO_PROXY,
// certificates verified against roots, nil meaning the system's, TLS 1.2
// at least) with 30 s per request like the Node SDK and IoT Edge
// (docs/dps-protocol.md#registering-and-polling).
func NewHTTPClient(roots *x509.CertPool) *http.Client {
	return tlsconfig.HTTPClient(roots, 30*time.Second)
}
