package tpm

import (
	"encoding/binary"
	"testing"
	"testing/synctest"

	"github.com/google/go-tpm/tpm2"
)

// scripted answers each command with the next response code it was given.
type scripted struct {
	codes []tpm2.TPMRC
	sent  int
}

func (s *scripted) Send([]byte) ([]byte, error) {
	rc := s.codes[min(s.sent, len(s.codes)-1)]
	s.sent++
	rsp := []byte{0x80, 0x01, 0, 0, 0, 10, 0, 0, 0, 0}
	binary.BigEndian.PutUint32(rsp[6:], uint32(rc))
	return rsp, nil
}

func (s *scripted) Close() error { return nil }

func TestSerialRetries(t *testing.T) {
	for _, tt := range []struct {
		name  string
		codes []tpm2.TPMRC
		sends int
		final tpm2.TPMRC
	}{
		{"success", []tpm2.TPMRC{tpm2.TPMRCSuccess}, 1, tpm2.TPMRCSuccess},
		{"retry then success", []tpm2.TPMRC{tpm2.TPMRCRetry, tpm2.TPMRCYielded, tpm2.TPMRCTesting, tpm2.TPMRCSuccess}, 4, tpm2.TPMRCSuccess},
		{"NV rate limit then success", []tpm2.TPMRC{tpm2.TPMRCNVRate, tpm2.TPMRCSuccess}, 2, tpm2.TPMRCSuccess},
		{"other errors are not retried", []tpm2.TPMRC{tpm2.TPMRCLockout}, 1, tpm2.TPMRCLockout},
		{"retries are bounded", []tpm2.TPMRC{tpm2.TPMRCRetry}, len(retryDelays) + 1, tpm2.TPMRCRetry},
	} {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				sc := &scripted{codes: tt.codes}
				rsp, err := (&serial{t: sc}).Send([]byte{0x80, 0x01})
				if err != nil {
					t.Fatal(err)
				}
				if got := tpm2.TPMRC(binary.BigEndian.Uint32(rsp[6:])); got != tt.final || sc.sent != tt.sends {
					t.Errorf("Send: code %#x after %d sends, want %#x after %d", uint32(got), sc.sent, uint32(tt.final), tt.sends)
				}
			})
		})
	}
}
