// Package dpstest runs the DPS emulator for tests the way a device reaches
// DPS: over TLS on loopback, with a CA the test trusts, and a service API
// client to enroll devices with.
package dpstest

import (
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"

	"github.com/edgetpm/edgetpm/internal/tlsconfig"

	"github.com/edgetpm/edgetpm/internal/dpsservice"
	"github.com/edgetpm/edgetpm/internal/emulator/dpsemu"
	"github.com/edgetpm/edgetpm/internal/emulator/pki"
)

// Server is a running emulator.
type Server struct {
	*dpsemu.Server
	// URL is the device and service endpoint, https://127.0.0.1:PORT.
	URL string
	CA  *pki.CA
	// HTTP trusts CA and nothing else.
	HTTP *http.Client
	// Service talks to the service API with the emulator's owner key.
	Service *dpsservice.Client
}

// Start starts an emulator configured by cfg, stopped when the test ends.
// wrap, when not nil, stands between the clients and the emulator, to
// tamper with what passes.
func Start(t testing.TB, cfg dpsemu.Config, wrap func(http.Handler) http.Handler) *Server {
	t.Helper()
	ca, err := pki.NewCA()
	if err != nil {
		t.Fatal(err)
	}
	emu, err := dpsemu.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	var h http.Handler = emu
	if wrap != nil {
		h = wrap(emu)
	}
	srv := httptest.NewUnstartedServer(h)
	if srv.TLS, err = ca.ServerTLS("127.0.0.1"); err != nil {
		t.Fatal(err)
	}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	hc := tlsconfig.HTTPClient(ca.Pool(), 0)
	return &Server{
		Server:  emu,
		URL:     srv.URL,
		CA:      ca,
		HTTP:    hc,
		Service: &dpsservice.Client{Conn: emu.ConnectionString(), Endpoint: srv.URL, HTTP: hc},
	}
}

// EnrollTPM creates the individual TPM enrollment of regID with the
// endorsement key ek (a marshalled TPM2B_PUBLIC); mutate, when not nil,
// changes it first.
func (s *Server) EnrollTPM(t testing.TB, regID string, ek []byte, mutate func(*dpsservice.Enrollment)) {
	t.Helper()
	e := dpsservice.Enrollment{
		RegistrationID: regID,
		Attestation:    dpsservice.Attestation{Type: "tpm", TPM: &dpsservice.TPMAttestation{EndorsementKey: ek}},
	}
	if mutate != nil {
		mutate(&e)
	}
	if _, err := s.Service.PutEnrollment(t.Context(), e, ""); err != nil {
		t.Fatal(err)
	}
}

// CAFile writes the CA certificate to a PEM file and returns its path.
func (s *Server) CAFile(t testing.TB) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(path, s.CA.CertPEM(), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}
