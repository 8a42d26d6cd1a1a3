package ekcert

import (
	"bytes"
	"crypto/x509"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"
)

// Every embedded certificate parses, is a CA and has no critical extension
// Go leaves unhandled; every one that is not a
// trust anchor chains through Go's verifier to an embedded anchor, and
// every one whose issuer is embedded carries that issuer's signature. The
// ones whose issuer is missing are exactly those decided on, anchors or
// not.
func TestEmbeddedChains(t *testing.T) {
	cas, err := embedded()
	if err != nil {
		t.Fatal(err)
	}
	files, err := caFS.ReadDir("ca")
	if err != nil {
		t.Fatal(err)
	}
	if n := len(files) - 1; len(cas) < n || n < 40 { // README.md aside
		t.Fatalf("%d embedded certificates from %d files", len(cas), n)
	}
	v, err := New(Config{})
	if err != nil {
		t.Fatal(err)
	}
	missing := map[string]bool{}
	anchors := map[string]string{}
	for _, c := range cas {
		if !c.cert.IsCA || !c.cert.BasicConstraintsValid {
			t.Errorf("%s is not a CA certificate", c.file)
		}
		if len(c.cert.UnhandledCriticalExtensions) > 0 {
			t.Errorf("%s has critical extensions Go refuses in a chain: %v", c.file, c.cert.UnhandledCriticalExtensions)
		}
		if c.anchor {
			anchors[c.file] = c.why
		}
		if selfSigned(c.cert) {
			continue
		}
		var issuer *embeddedCA
		for _, p := range cas {
			if bytes.Equal(p.cert.RawSubject, c.cert.RawIssuer) {
				issuer = &p
				break
			}
		}
		if issuer == nil {
			missing[c.file] = true
			continue
		}
		if err := issuer.cert.CheckSignature(c.cert.SignatureAlgorithm, c.cert.RawTBSCertificate, c.cert.Signature); err != nil {
			t.Errorf("%s: not signed by its issuer %s: %v", c.file, issuer.file, err)
		}
		if c.anchor {
			continue
		}
		// The pools hold copies that never expire (see Verify).
		_, err := lift(c.cert).Verify(x509.VerifyOptions{
			Roots: v.roots, Intermediates: v.intermediates,
			CurrentTime: time.Now(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
		})
		if err != nil {
			t.Errorf("%s does not chain to an embedded anchor: %v", c.file, err)
		}
	}
	decided := slices.Sorted(maps.Keys(designatedAnchors))
	decided = append(decided, slices.Collect(maps.Keys(notAnchored))...)
	slices.Sort(decided)
	if got := slices.Sorted(maps.Keys(missing)); !slices.Equal(got, decided) {
		t.Errorf("embedded certificates whose issuer is not embedded: %q; decided on %q", got, decided)
	}
	for f := range notAnchored {
		if anchors[f] != "" {
			t.Errorf("%s is an anchor: %s", f, anchors[f])
		}
	}
	for f := range designatedAnchors {
		if anchors[f] == "" {
			t.Errorf("%s is not an anchor", f)
		}
	}
	// The SHA-1 links are Infineon's IFX TPM EK Intermediate CAs, no more.
	for f, why := range anchors {
		if strings.HasPrefix(why, "SHA-1") && !strings.HasPrefix(f, "IFX") {
			t.Errorf("%s is an anchor by %s", f, why)
		}
	}
	for _, f := range slices.Sorted(maps.Keys(missing)) {
		t.Logf("issuer not embedded: %s (anchor: %t)", f, anchors[f] != "")
	}
	for _, f := range slices.Sorted(maps.Keys(anchors)) {
		t.Logf("anchor %s: %s", f, anchors[f])
	}
}

func TestParseVendorID(t *testing.T) {
	for s, want := range map[string]uint32{"id:49465800": 0x49465800, "ID:4e544300": 0x4e544300, "id:0000101": 0, "49465800": 0, "id:4946580g": 0, "id:494658000": 0} {
		got, ok := parseVendorID(s)
		if got != want || ok != (want != 0) {
			t.Errorf("parseVendorID(%q) = %#x, %t; want %#x", s, got, ok, want)
		}
	}
}
