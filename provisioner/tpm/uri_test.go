package tpm

import (
	"errors"
	"strings"
	"testing"

	"github.com/edgetpm/edgetpm/internal/testharness/tpmtest"
)

func TestTCTI(t *testing.T) {
	for _, tc := range []struct{ uri, tcti string }{
		{"device:/dev/tpmrm0", "device:/dev/tpmrm0"},
		{"", "device:/dev/tpmrm0"},
		{"swtpm://127.0.0.1:2321", "swtpm:host=127.0.0.1,port=2321"},
		{"mssim://127.0.0.1:2321", "mssim:host=127.0.0.1,port=2321"},
		{"mssim://[::1]:2321", "mssim:host=::1,port=2321"},
		{"swtpm://tpm.local:4000/", "swtpm:host=tpm.local,port=4000"},
	} {
		got, err := TCTI(tc.uri)
		if err != nil || got != tc.tcti {
			t.Errorf("TCTI(%q) = %q, %v; want %q", tc.uri, got, err, tc.tcti)
		}
	}
	for _, bad := range []string{"tpm", "device:", "swtpm://h", "mssim://h:0", "tcp://h:1", "swtpm://h:65535"} {
		if got, err := TCTI(bad); !errors.Is(err, ErrURI) {
			t.Errorf("TCTI(%q) = %q, %v; want ErrURI", bad, got, err)
		}
	}
}

// config.toml's TCTI, in the forms edge-provisioner writes and operators
// may write, names the TPM OpenTransport reaches as tpm2-tss would.
func TestTCTIURI(t *testing.T) {
	for _, tc := range []struct{ tcti, uri string }{
		{"device:/dev/tpmrm0", "device:/dev/tpmrm0"},
		{"device", "device:/dev/tpm0"},
		{"device:path=/dev/tpmrm0", "device:/dev/tpmrm0"},
		{"mssim:host=127.0.0.1,port=2321", "mssim://127.0.0.1:2321"},
		{"swtpm:host=localhost,port=4000", "swtpm://localhost:4000"},
		{"swtpm:port=4000", "swtpm://localhost:4000"},
		{"mssim:host=::1,port=2321", "mssim://[::1]:2321"},
		{"mssim", "mssim://localhost:2321"},
		{"swtpm", "swtpm://localhost:2321"},
	} {
		got, err := TCTIURI(tc.tcti)
		if err != nil || got != tc.uri {
			t.Errorf("TCTIURI(%q) = %q, %v; want %q", tc.tcti, got, err, tc.uri)
		}
	}
	for _, bad := range []string{"", "tabrmd:bus_name=com.intel.tss2.Tabrmd", "libtpms", "device:dev", "swtpm:port=x", "mssim:host=h,port=2321,path=/x", "swtpm:port=65535"} {
		if got, err := TCTIURI(bad); !errors.Is(err, ErrURI) {
			t.Errorf("TCTIURI(%q) = %q, %v; want ErrURI", bad, got, err)
		}
	}
}

// A URI of the wrong kind of simulator fails at once and names the right
// one, where tpm2-tss would fail at aziot-tpmd's start.
func TestOpenWrongKind(t *testing.T) {
	sw := tpmtest.StartSwtpm(t)
	_, err := OpenTransport("mssim" + sw.URI[len("swtpm"):])
	if !errors.Is(err, ErrKind) || !strings.Contains(err.Error(), sw.URI) {
		t.Errorf("OpenTransport(mssim:// on swtpm) = %v, want ErrKind naming %s", err, sw.URI)
	}
	sim := tpmtest.StartSim(t)
	_, err = OpenTransport("swtpm" + sim[len("mssim"):])
	if !errors.Is(err, ErrKind) || !strings.Contains(err.Error(), sim) {
		t.Errorf("OpenTransport(swtpm:// on the reference simulator) = %v, want ErrKind naming %s", err, sim)
	}
}

// TCTIURI reads config.toml's tpm.tcti, which anyone may have written: it
// never panics, and what it accepts is a URI that TCTI turns back into a
// TCTI naming the same TPM.
func FuzzTCTIURI(f *testing.F) {
	for _, s := range []string{"device:/dev/tpmrm0", "device", "mssim:host=::1,port=2321", "swtpm:port=4000", "swtpm:host=a,port=1,", "tabrmd", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, tcti string) {
		uri, err := TCTIURI(tcti)
		if err != nil {
			return
		}
		back, err := TCTI(uri)
		if err != nil {
			t.Fatalf("TCTIURI(%q) = %q, which TCTI refuses: %v", tcti, uri, err)
		}
		again, err := TCTIURI(back)
		if err != nil || again != uri {
			t.Fatalf("TCTIURI(%q) = %q -> TCTI %q -> %q, %v", tcti, uri, back, again, err)
		}
	})
}
