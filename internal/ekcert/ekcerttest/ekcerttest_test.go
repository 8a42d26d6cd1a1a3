package ekcerttest_test

import (
	"crypto/x509"
	"sync"
	"testing"

	"github.com/edgetpm/edgetpm/internal/ekcert/ekcerttest"
)

// Issue is safe for concurrent use and gives every certificate its own
// serial number.
func TestIssueConcurrent(t *testing.T) {
	ca := ekcerttest.NewCA(t)
	ek := &ekcerttest.ECCKey(t).PublicKey
	var mu sync.Mutex
	serials := map[string]bool{}
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 25 {
				der, err := ca.Leaf(ekcerttest.Leaf{EK: ek})
				if err != nil {
					t.Error(err)
					return
				}
				c, err := x509.ParseCertificate(der)
				if err != nil {
					t.Error(err)
					return
				}
				if err := c.CheckSignatureFrom(ca.Intermediate); err != nil {
					t.Error(err)
				}
				mu.Lock()
				serials[c.SerialNumber.String()] = true
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if len(serials) != 200 {
		t.Errorf("%d distinct serial numbers in 200 certificates", len(serials))
	}
}

// BenchmarkIssue is the cost of one EK certificate (enrolling many
// identities in a test).
func BenchmarkIssue(b *testing.B) {
	ca := ekcerttest.NewCA(b)
	ek := &ekcerttest.ECCKey(b).PublicKey
	for b.Loop() {
		ca.Issue(ek)
	}
}
