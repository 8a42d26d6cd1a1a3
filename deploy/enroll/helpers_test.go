package enroll

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"math/big"
	"net/http/httptest"
	"testing"

	"github.com/edgetpm/edgetpm/internal/dpsservice"
	"github.com/edgetpm/edgetpm/internal/ekcert"
	"github.com/edgetpm/edgetpm/internal/ekcert/ekcerttest"
	"github.com/edgetpm/edgetpm/internal/emulator/dpsemu"
)

// fakeEK returns an EK TPM2B_PUBLIC in the shape of the TCG template
// whose modulus is a random odd 2048-bit number, and that public key: no
// private key is ever used, and generating 10,000 real RSA keys takes
// minutes.
func fakeEK(t testing.TB) ([]byte, *rsa.PublicKey) {
	t.Helper()
	n := make([]byte, 256)
	if _, err := rand.Read(n); err != nil {
		t.Fatal(err)
	}
	n[0] |= 0x80
	n[255] |= 1
	pub := &rsa.PublicKey{N: new(big.Int).SetBytes(n), E: 65537}
	return ekcerttest.TPMPublic(t, pub), pub
}

func certPEM(der []byte) string {
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
}

// record returns an identity as 'edge-provisioner identity --json' prints
// it, with an EK certificate from ca and its intermediate when ca is not
// nil.
func record(t testing.TB, id string, ca *ekcerttest.CA) Record {
	t.Helper()
	ek, pub := fakeEK(t)
	r := Record{RegistrationID: id, EndorsementKey: base64.StdEncoding.EncodeToString(ek)}
	if ca != nil {
		r.Certificate, r.Chain = certPEM(ca.Issue(pub)), []string{certPEM(ca.Intermediate.Raw)}
	}
	return r
}

// dps is an emulator served over TLS and a service client of it.
type dps struct {
	srv *dpsemu.Server
	svc *dpsservice.Client
}

func startDPS(t testing.TB, cfg dpsemu.Config) *dps {
	t.Helper()
	srv, err := dpsemu.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewTLSServer(srv)
	t.Cleanup(ts.Close)
	return &dps{srv: srv, svc: &dpsservice.Client{Conn: srv.ConnectionString(), Endpoint: ts.URL, HTTP: ts.Client()}}
}

// all returns every enrollment the emulator holds, by registration ID.
func (d *dps) all(t testing.TB) map[string]dpsservice.Enrollment {
	t.Helper()
	out := map[string]dpsservice.Enrollment{}
	cont := ""
	for {
		page, next, err := d.svc.QueryPage(t.Context(), "SELECT * FROM enrollments", 1000, cont)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range page {
			out[e.RegistrationID] = e
		}
		if next == "" {
			return out
		}
		cont = next
	}
}

// verifier trusts the roots of cas.
func verifier(t testing.TB, cas ...*ekcerttest.CA) Verifier {
	t.Helper()
	var anchors []*x509.Certificate
	for _, ca := range cas {
		anchors = append(anchors, ca.Root)
	}
	v, err := ekcert.New(ekcert.Config{Anchors: anchors})
	if err != nil {
		t.Fatal(err)
	}
	return v
}
