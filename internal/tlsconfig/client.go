package tlsconfig

import (
	"crypto/tls"
	"crypto/x509"
	"net/http"
	"time"
)

// Client returns a new TLS client configuration that verifies the
// server's chain against roots (nil: the system's) and its certificate
// against serverName ("": the host dialled), at TLS 1.2 or later, the
// floor of DPS, IoT Hub and edgeHub. serverName lets a client dial an
// address other than the name it trusts (a gateway reached by IP).
func Client(roots *x509.CertPool, serverName string) *tls.Config {
	return &tls.Config{RootCAs: roots, ServerName: serverName, MinVersion: tls.VersionTLS12}
}

// HTTPClient returns a new HTTP client for the product's HTTPS calls:
// the proxy from HTTPS_PROXY and NO_PROXY (factory networks), trust as in
// Client(roots, ""), and timeout bounding each request, body included
// (0: none).
func HTTPClient(roots *x509.CertPool, timeout time.Duration) *http.Client {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = Client(roots, "")
	return &http.Client{Transport: tr, Timeout: timeout}
}
