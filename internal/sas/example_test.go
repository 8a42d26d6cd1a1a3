package sas_test

import (
	"context"
	"fmt"
	"time"

	"github.com/edgetpm/edgetpm/internal/sas"
)

// A module token signed with a software key and checked the way edgeHub
// does. On a device the Signer is the TPM (provisioner/tpm.TPM).
func Example() {
	key := sas.Key("a 32-byte device key, for example")
	expiry := time.Unix(1767225600, 0)
	token, err := sas.New(context.Background(), key, sas.ModuleResource("myhub.azure-devices.net", "edge1", "relay"), "", expiry)
	if err != nil {
		panic(err)
	}
	tok, err := sas.Parse(token)
	if err != nil {
		panic(err)
	}
	fmt.Println(tok.Resource)
	fmt.Println(tok.MatchAudience("MyHub.azure-devices.net/devices/edge1/modules/relay"))
	fmt.Println(tok.Verify(key, expiry.Add(-time.Minute)))
	fmt.Println(tok.Verify(key, expiry.Add(10*time.Minute)))
	// Output:
	// myhub.azure-devices.net%2Fdevices%2Fedge1%2Fmodules%2Frelay
	// <nil>
	// <nil>
	// SAS token expired at 2026-01-01T00:00:00Z
}
