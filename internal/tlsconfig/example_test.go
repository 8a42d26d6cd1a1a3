package tlsconfig_test

import (
	"crypto/tls"
	"fmt"
	"time"

	"github.com/edgetpm/edgetpm/internal/tlsconfig"
)

// A client of a gateway reached by address: the system's roots plus a
// private CA (none here), and the gateway's name checked in its
// certificate.
func ExampleClient() {
	roots, err := tlsconfig.TrustFile("") // a --ca-file flag; "" is the system's roots
	if err != nil {
		fmt.Println(err)
		return
	}
	cfg := tlsconfig.Client(roots, "gateway.example")
	fmt.Println(cfg.ServerName, cfg.MinVersion == tls.VersionTLS12)
	// Output: gateway.example true
}

func ExampleHTTPClient() {
	hc := tlsconfig.HTTPClient(nil, 30*time.Second)
	fmt.Println(hc.Timeout)
	// Output: 30s
}
