package lab

import (
	"testing"

	"github.com/edgetpm/edgetpm/internal/emulator/hubemu"
)

// The runtime stand-in reaches the TPM config.toml names, in the TCTI
// forms edge-provisioner writes and aziot-tpmd reads.
func TestTCTIURI(t *testing.T) {
	for _, tc := range []struct{ tcti, uri string }{
		{"device:/dev/tpmrm0", "device:/dev/tpmrm0"},
		{"mssim:host=127.0.0.1,port=2321", "mssim://127.0.0.1:2321"},
		{"swtpm:host=localhost,port=4000", "mssim://localhost:4000"},
		{"swtpm:port=4000", "mssim://127.0.0.1:4000"},
		{"mssim:host=::1,port=2321", "mssim://[::1]:2321"},
		{"mssim", "mssim://127.0.0.1:2321"},
		{"device", "device:/dev/tpm0"},
	} {
		if got, err := tctiURI(tc.tcti); err != nil || got != tc.uri {
			t.Errorf("tctiURI(%q) = %q, %v; want %q", tc.tcti, got, err, tc.uri)
		}
	}
	for _, bad := range []string{"", "tabrmd:bus_name=com.intel.tss2.Tabrmd", "libtpms"} {
		if got, err := tctiURI(bad); err == nil {
			t.Errorf("tctiURI(%q) = %q, want an error", bad, got)
		}
	}
}

// Readings count once, whether they came alone or in the relay's batches,
// and what is not a reading is ignored.
func TestSensorMissing(t *testing.T) {
	s := &sensor{acked: []int64{1, 2, 3, 4, 5}}
	msgs := []hubemu.Message{
		{Body: []byte(`{"seq":1,"temperature":21}`)},
		{Body: []byte(`[{"seq":2},{"seq":4}]`)},
		{Body: []byte(`{"seq":1}`)}, // redelivered
		{Body: []byte(`not json`)},
		{Body: []byte(`[1,2,3]`)},
	}
	got := s.missing(msgs)
	if len(got) != 2 || got[0] != 3 || got[1] != 5 {
		t.Errorf("missing = %v, want [3 5]", got)
	}
	if s.published() != 5 {
		t.Errorf("published = %d", s.published())
	}
}
