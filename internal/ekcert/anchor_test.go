package ekcert

import (
	"crypto/x509"
	"testing"

	"github.com/edgetpm/edgetpm/internal/ekcert/ekcerttest"
)

// The result names the anchor the chain ends at, and says whether the
// operator gave it: a chain to an --ek-ca anchor is not a manufacturer's.
// A root both embedded and given by the operator is the manufacturer's.
func TestResultAnchor(t *testing.T) {
	maker, own := ekcerttest.NewCA(t), ekcerttest.NewCA(t)
	v, err := newVerifier(Config{Anchors: []*x509.Certificate{own.Root, maker.Root}},
		[]embeddedCA{{file: "Maker_EK_Root.pem", cert: maker.Root, anchor: true, why: "self-signed"}})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name     string
		ca       *ekcerttest.CA
		anchor   string
		operator bool
	}{
		{"manufacturer", maker, "Maker_EK_Root.pem", false},
		{"operator", own, own.Root.Subject.String(), true},
	} {
		k := ekcerttest.RSAKey(t)
		res, err := v.Verify(ekcerttest.TPMPublic(t, &k.PublicKey), tc.ca.Issue(&k.PublicKey), [][]byte{tc.ca.Intermediate.Raw})
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if res.Anchor != tc.anchor || res.OperatorAnchor != tc.operator {
			t.Errorf("%s: anchor %q, operator %t; want %q, %t", tc.name, res.Anchor, res.OperatorAnchor, tc.anchor, tc.operator)
		}
	}
}
