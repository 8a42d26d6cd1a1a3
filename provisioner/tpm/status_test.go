package tpm

import (
	"errors"
	"testing"

	"github.com/google/go-tpm/tpm2"

	"github.com/edgetpm/edgetpm/internal/testharness/tpmtest"
)

// Status reads and never creates; it follows Identity and ImportKey.
func TestStatus(t *testing.T) {
	tpmtest.Each(t, func(t *testing.T, uri string) {
		tp := open(t, uri, Config{})
		st, err := tp.Status(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		if st.EndorsementKey || st.StorageRootKey || st.AuthKey || st.AuthKeyHandle != uint32(DefaultAuthKeyHandle) || st.Manufacturer == "" {
			t.Fatalf("Status of a fresh TPM = %+v, want nothing persisted", st)
		}
		if st, _ := tp.Status(t.Context()); st.EndorsementKey {
			t.Fatal("Status created the EK")
		}
		id, err := tp.Identity(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		if st, err := tp.Status(t.Context()); err != nil || !st.EndorsementKey || !st.StorageRootKey || st.AuthKey {
			t.Fatalf("Status after Identity = %+v, %v; want EK and SRK", st, err)
		}
		if err := tp.ImportKey(t.Context(), blobFor(t, id.EndorsementKey, id.StorageRootKey, randBytes(t, 32))); err != nil {
			t.Fatal(err)
		}
		if st, err := tp.Status(t.Context()); err != nil || !st.AuthKey {
			t.Fatalf("Status after ImportKey = %+v, %v; want the auth key", st, err)
		}
	})
}

func TestCheckAuthorization(t *testing.T) {
	tpmtest.Each(t, func(t *testing.T, uri string) {
		tp := open(t, uri, Config{})
		if err := tp.CheckAuthorization(t.Context()); err != nil {
			t.Fatalf("CheckAuthorization with empty passwords: %v", err)
		}
		if _, err := (tpm2.HierarchyChangeAuth{AuthHandle: tpm2.TPMRHOwner, NewAuth: tpm2.TPM2BAuth{Buffer: []byte("o")}}).Execute(tp.t); err != nil {
			t.Fatal(err)
		}
		if err := tp.CheckAuthorization(t.Context()); !errors.Is(err, ErrAuthorization) {
			t.Errorf("CheckAuthorization with a wrong owner password = %v, want ErrAuthorization", err)
		}
		tp.cfg.OwnerAuth = []byte("o")
		if err := tp.CheckAuthorization(t.Context()); err != nil {
			t.Errorf("CheckAuthorization with the owner password: %v", err)
		}
		if st, _ := tp.Status(t.Context()); st.StorageRootKey || st.EndorsementKey {
			t.Error("CheckAuthorization persisted a key")
		}
	})
}
