package dpsservice_test

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"fmt"
	"net/http/httptest"

	"github.com/google/go-tpm/tpm2"

	"github.com/edgetpm/edgetpm/internal/dpsservice"
	"github.com/edgetpm/edgetpm/internal/emulator/dpsemu"
)

// Enrolling a fleet: bulk operations of at most MaxBulk enrollments, each
// failure named in the result, then every enrollment read back page by
// page. Here against the DPS emulator; Endpoint is empty for real DPS.
func ExampleClient_Bulk() {
	emu, err := dpsemu.New(dpsemu.Config{})
	if err != nil {
		panic(err)
	}
	ts := httptest.NewTLSServer(emu)
	defer ts.Close()
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		panic(err)
	}
	ek := tpm2.RSAEKTemplate
	ek.Unique = tpm2.NewTPMUPublicID(tpm2.TPMAlgRSA, &tpm2.TPM2BPublicKeyRSA{Buffer: k.N.Bytes()})
	att := dpsservice.Attestation{Type: "tpm", TPM: &dpsservice.TPMAttestation{EndorsementKey: tpm2.Marshal(tpm2.New2B(ek))}}

	c := dpsservice.Client{Conn: emu.ConnectionString(), Endpoint: ts.URL, HTTP: ts.Client()}
	ctx := context.Background()
	var fleet []dpsservice.Enrollment
	for i := range 12 {
		fleet = append(fleet, dpsservice.Enrollment{RegistrationID: fmt.Sprintf("edge-%02d", i), Attestation: att})
	}
	fleet[11].Attestation = dpsservice.Attestation{Type: "tpm"} // no EK
	for len(fleet) > 0 {
		n := min(len(fleet), dpsservice.MaxBulk)
		res, err := c.Bulk(ctx, dpsservice.BulkCreate, fleet[:n])
		if err != nil {
			panic(err)
		}
		for _, e := range res.Errors {
			fmt.Println("failed:", e.RegistrationID, e.ErrorCode)
		}
		fleet = fleet[n:]
	}

	total, cont := 0, ""
	for {
		page, next, err := c.QueryPage(ctx, "SELECT * FROM enrollments", 5, cont)
		if err != nil {
			panic(err)
		}
		total += len(page)
		if next == "" {
			break
		}
		cont = next
	}
	fmt.Println("enrolled:", total)
	// Output:
	// failed: edge-11 400004
	// enrolled: 11
}
