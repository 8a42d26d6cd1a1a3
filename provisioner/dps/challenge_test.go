package dps_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/edgetpm/edgetpm/internal/dpsservice"
	"github.com/edgetpm/edgetpm/internal/emulator/dpsemu"
	"github.com/edgetpm/edgetpm/internal/testharness/tpmtest"
	"github.com/edgetpm/edgetpm/provisioner/dps"
)

// Challenge tells an enrollment that matches from one that does not, and
// registers nothing.
func TestChallenge(t *testing.T) {
	_, id := openTPM(t, tpmtest.StartSim(t))
	l := newLab(t, dpsemu.Config{}, nil)
	c := l.client(nil)
	req := request(id)

	err := c.Challenge(t.Context(), req)
	var e *dps.Error
	if !errors.As(err, &e) || e.HTTPStatus != 401 || !strings.Contains(err.Error(), "no enrollment for this registration ID") {
		t.Errorf("Challenge without an enrollment = %v, want a 401 refusal with its hint", err)
	}

	l.enroll(t, id, func(e *dpsservice.Enrollment) { e.Capabilities = &dpsservice.Capabilities{IoTEdge: true} })
	if err := c.Challenge(t.Context(), req); err != nil {
		t.Fatalf("Challenge of an enrolled TPM = %v", err)
	}
	enr, err := l.Service.GetEnrollment(t.Context(), id.RegistrationID)
	if err != nil {
		t.Fatal(err)
	}
	if enr.RegistrationState != nil {
		t.Errorf("Challenge registered the device: %+v", enr.RegistrationState)
	}

	other := req
	other.EndorsementKey = req.StorageRootKey // any other public area
	if err := c.Challenge(t.Context(), other); !errors.As(err, &e) || e.Code != 400004 || !strings.Contains(err.Error(), "does not match the enrollment") {
		t.Errorf("Challenge with another endorsement key = %v, want 400004 and its hint", err)
	}
}
