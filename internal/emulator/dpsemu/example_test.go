package dpsemu_test

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

// An emulator served over TLS, seeded with a TPM enrollment through the
// service API. A device then registers at ts.URL + "/" + emu.IDScope() +
// "/registrations/…" (docs/dps-protocol.md#the-flow).
func Example() {
	emu, err := dpsemu.New(dpsemu.Config{IDScope: "0ne0000A1B2"})
	if err != nil {
		panic(err)
	}
	ts := httptest.NewTLSServer(emu)
	defer ts.Close()

	// An EK as a TPM reports it: a TPM2B_PUBLIC in the TCG template.
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		panic(err)
	}
	ek := tpm2.RSAEKTemplate
	ek.Unique = tpm2.NewTPMUPublicID(tpm2.TPMAlgRSA, &tpm2.TPM2BPublicKeyRSA{Buffer: k.N.Bytes()})

	svc := dpsservice.Client{Conn: emu.ConnectionString(), Endpoint: ts.URL, HTTP: ts.Client()}
	enr, err := svc.PutEnrollment(context.Background(), dpsservice.Enrollment{
		RegistrationID: "edge-1",
		Attestation: dpsservice.Attestation{Type: "tpm", TPM: &dpsservice.TPMAttestation{
			EndorsementKey: tpm2.Marshal(tpm2.New2B(ek)),
		}},
	}, "")
	if err != nil {
		panic(err)
	}
	fmt.Println(emu.IDScope(), enr.RegistrationID, enr.ProvisioningStatus)
	// Output: 0ne0000A1B2 edge-1 enabled
}
