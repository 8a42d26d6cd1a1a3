package ekcert_test

import (
	"fmt"
	"log"
	"os"
	"time"

	"github.com/edgetpm/edgetpm/internal/ekcert"
)

// An swtpm's EK, checked against its local CA given as an anchor, as
// edge-deploy enroll --ek-ca does.
func ExampleVerifier_Verify() {
	read := func(name string) []byte {
		b, err := os.ReadFile("testdata/swtpm/" + name)
		if err != nil {
			log.Fatal(err)
		}
		return b
	}
	anchors, err := ekcert.ParsePEM(read("localca-root.pem"))
	if err != nil {
		log.Fatal(err)
	}
	v, err := ekcert.New(ekcert.Config{
		Anchors: anchors,
		Now:     func() time.Time { return time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC) },
	})
	if err != nil {
		log.Fatal(err)
	}
	// The EK's TPM2B_PUBLIC, its certificate from NV 0x01c00002 and the
	// issuing CA the TPM would keep in a chain index.
	res, err := v.Verify(read("ek-rsa.pub"), read("ek-rsa.nv"), [][]byte{mustDER(read("localca-issuer.pem"))})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(res.ManufacturerID, res.Model, res.Version)
	fmt.Println(res.Chain[len(res.Chain)-1].Subject)
	// Output:
	// id:00001014 swtpm id:20191023
	// CN=swtpm-localca-rootca
}

func mustDER(pemData []byte) []byte {
	certs, err := ekcert.ParsePEM(pemData)
	if err != nil {
		log.Fatal(err)
	}
	return certs[0].Raw
}
