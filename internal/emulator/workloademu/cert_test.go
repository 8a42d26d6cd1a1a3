package workloademu

import (
	"crypto/ecdsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"slices"
	"testing"
	"time"
)

// The server certificate chains to the CA and carries the names and EKU of
// docs/edge-protocol.md#workload-api.
func TestServerCertificate(t *testing.T) {
	ca := newCA(t)
	h := newServer(t, Config{CA: ca}).Handler()
	for _, tc := range []struct {
		module, commonName string
		wantDNS            []string
		wantIP             []string
	}{
		{"%24edgeHub", "edge1-host", []string{"edge1-host", "edgeHub"}, nil},
		{"filtermodule", "my-module-host", []string{"my-module-host", "filtermodule"}, nil},
		{"filtermodule", "10.1.2.3", []string{"filtermodule"}, []string{"10.1.2.3"}},
		{"filtermodule", "filtermodule", []string{"filtermodule"}, nil},
	} {
		body := `{"commonName":"` + tc.commonName + `","expiration":"2000-01-01T00:00:00Z"}`
		w := call(h, "POST", "/modules/"+tc.module+"/genid/1/certificate/server"+v, "application/json", body)
		if w.Code != 201 {
			t.Fatalf("server certificate for %s as %q = %d %s, want 201", tc.module, tc.commonName, w.Code, w.Body)
		}
		var rsp struct {
			PrivateKey struct {
				Type, Bytes string
			} `json:"privateKey"`
			Certificate, Expiration string
		}
		if err := json.Unmarshal(w.Body.Bytes(), &rsp); err != nil {
			t.Fatal(err)
		}
		if rsp.PrivateKey.Type != "key" {
			t.Errorf("privateKey.type = %q, want key", rsp.PrivateKey.Type)
		}
		kb, _ := pem.Decode([]byte(rsp.PrivateKey.Bytes))
		if kb == nil || kb.Type != "PRIVATE KEY" {
			t.Fatalf("privateKey.bytes is not a PKCS#8 PEM key: %q", rsp.PrivateKey.Bytes)
		}
		key, err := x509.ParsePKCS8PrivateKey(kb.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		var chain []*x509.Certificate
		for rest := []byte(rsp.Certificate); ; {
			var b *pem.Block
			if b, rest = pem.Decode(rest); b == nil {
				break
			}
			c, err := x509.ParseCertificate(b.Bytes)
			if err != nil {
				t.Fatal(err)
			}
			chain = append(chain, c)
		}
		if len(chain) != 2 {
			t.Fatalf("certificate holds %d certificates, want leaf and CA", len(chain))
		}
		leaf := chain[0]
		if !leaf.PublicKey.(*ecdsa.PublicKey).Equal(key.(*ecdsa.PrivateKey).Public()) {
			t.Error("private key does not match the certificate")
		}
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: ca.Pool(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
			t.Errorf("leaf does not verify against the CA for serverAuth: %v", err)
		}
		if err := leaf.VerifyHostname(tc.commonName); err != nil {
			t.Errorf("leaf not valid for %q: %v", tc.commonName, err)
		}
		if leaf.Subject.CommonName != tc.commonName {
			t.Errorf("CN = %q, want %q", leaf.Subject.CommonName, tc.commonName)
		}
		if !slices.Equal(leaf.DNSNames, tc.wantDNS) {
			t.Errorf("DNS SANs = %q, want %q", leaf.DNSNames, tc.wantDNS)
		}
		var ips []string
		for _, ip := range leaf.IPAddresses {
			ips = append(ips, ip.String())
		}
		if !slices.Equal(ips, tc.wantIP) {
			t.Errorf("IP SANs = %q, want %q", ips, tc.wantIP)
		}
		if !slices.Equal(leaf.ExtKeyUsage, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}) {
			t.Errorf("EKU = %v, want serverAuth only", leaf.ExtKeyUsage)
		}
		exp, err := time.Parse(time.RFC3339, rsp.Expiration)
		if err != nil || !exp.Equal(leaf.NotAfter) || rsp.Expiration[len(rsp.Expiration)-6:] != "+00:00" {
			t.Errorf("expiration = %q, want the leaf's notAfter %s in +00:00 form", rsp.Expiration, leaf.NotAfter)
		}
	}
}

func TestServerCertificateWithoutCA(t *testing.T) {
	h := newServer(t, Config{}).Handler()
	w := call(h, "POST", "/modules/filtermodule/genid/1/certificate/server"+v, noCT, `{"commonName":"x"}`)
	if want := msg("failed to create cert aziot-edged/module/filtermodule:1:server"); w.Code != 500 || w.Body.String() != want {
		t.Errorf("server certificate without a CA = %d %s, want 500 %s", w.Code, w.Body, want)
	}
}
