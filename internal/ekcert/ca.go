package ekcert

import (
	"bytes"
	"crypto/x509"
	"embed"
	"fmt"
	"path"
	"slices"
	"sync"
)

// The manufacturers' CA certificates, as they publish them; ca/README.md
// says where each comes from.
//
//go:embed ca/*.pem
var caFS embed.FS

// designatedAnchors are embedded CA certificates that are not self-signed
// but are trust anchors on purpose: each is the top of its manufacturer's
// published chain, and the certificate that issued it is not published
// with it. A certificate with a missing issuer is never an anchor by
// accident: TestEmbeddedChains fails until it is listed here or left out
// on purpose (notAnchored).
var designatedAnchors = map[string]string{
	// Infineon's RSA root for the "IFX TPM EK Intermediate CA" family; its
	// issuer, VeriSign's TPM root, is no longer published.
	"IFX_RSA_RT.pem": "IFX TPM EK Root CA, issued by the unpublished VeriSign TPM root",
	// STMicroelectronics' ECC root, issued by GlobalSign's TPM ECC root,
	// which the bundle does not hold.
	"STM_ECC_01RT.pem": "STM TPM ECC Root CA 01, issued by the unbundled GlobalSign TPM ECC root",
}

// notAnchored are embedded intermediates whose root is not embedded and
// that stay intermediates: the vendor's root is not published with them,
// so an operator who trusts these chips adds the root (or the
// intermediate) with --ek-ca.
var notAnchored = map[string]string{
	"Alibaba_Cloud_vTPM_EK.pem": "Aliyun TPM EKMF CA; Aliyun TPM Root CA is not bundled",
	"Nationz_TPM_EK.pem":        "Nationz TPM Manufacturing CA 001; Nationz TPM Root CA is not bundled",
}

// embeddedCA is one embedded certificate and the role it plays.
type embeddedCA struct {
	file   string
	cert   *x509.Certificate
	anchor bool
	// why tells how it became an anchor: "self-signed", designated, or
	// "SHA-1 link from <file>".
	why string
}

// embedded parses the embedded certificates once.
var embedded = sync.OnceValues(loadEmbedded)

func loadEmbedded() ([]embeddedCA, error) {
	names, err := caFS.ReadDir("ca")
	if err != nil {
		return nil, err
	}
	var cas []embeddedCA
	for _, n := range names {
		if path.Ext(n.Name()) != ".pem" {
			continue
		}
		data, err := caFS.ReadFile("ca/" + n.Name())
		if err != nil {
			return nil, err
		}
		certs, err := ParsePEM(data)
		if err != nil {
			return nil, fmt.Errorf("embedded %s: %w", n.Name(), err)
		}
		for _, c := range certs {
			cas = append(cas, embeddedCA{file: n.Name(), cert: c})
		}
	}
	for i := range cas {
		c := &cas[i]
		switch {
		case selfSigned(c.cert):
			c.anchor, c.why = true, "self-signed"
		case designatedAnchors[c.file] != "":
			c.anchor, c.why = true, designatedAnchors[c.file]
		}
	}
	// Go's chain building refuses SHA-1 signatures, and Infineon's "IFX TPM
	// EK Intermediate CA" certificates are signed with SHA-1 by their root.
	// Their link to that embedded anchor is checked here, SHA-1 allowed:
	// both ends are embedded, so the check only confirms the bundle is
	// consistent, and the intermediate becomes an anchor. EK certificates
	// themselves must still be signed with SHA-256 or better.
	for i := range cas {
		c := &cas[i]
		if c.anchor || !sha1Signed(c.cert) {
			continue
		}
		for _, p := range cas {
			if p.anchor && p.why != "" && bytes.Equal(c.cert.RawIssuer, p.cert.RawSubject) &&
				p.cert.CheckSignature(c.cert.SignatureAlgorithm, c.cert.RawTBSCertificate, c.cert.Signature) == nil {
				c.anchor, c.why = true, "SHA-1 link from "+p.file
				break
			}
		}
	}
	return cas, nil
}

// selfSigned reports whether c is signed by its own key (SHA-1 allowed:
// a root's self-signature proves nothing, it only tells a root apart).
func selfSigned(c *x509.Certificate) bool {
	return bytes.Equal(c.RawIssuer, c.RawSubject) &&
		c.CheckSignature(c.SignatureAlgorithm, c.RawTBSCertificate, c.Signature) == nil
}

func sha1Signed(c *x509.Certificate) bool {
	return slices.Contains([]x509.SignatureAlgorithm{x509.SHA1WithRSA, x509.ECDSAWithSHA1, x509.DSAWithSHA1}, c.SignatureAlgorithm)
}
