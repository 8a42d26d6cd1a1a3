package tpm

import (
	"errors"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"

	"github.com/edgetpm/edgetpm/internal/testharness/tpmtest"
)

// swtpm serves one connection at a time: while another client holds it
// (aziot-tpmd, a running edge-relay, a tool), opening the
// TPM fails within seconds and says who may hold it, instead of waiting two
// minutes for a response that does not come.
func TestOpenHeldTPMFailsFast(t *testing.T) {
	sw := tpmtest.StartSwtpm(t)
	held, err := net.Dial("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(sw.Port)))
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	// swtpm serves the first connection it accepted; make sure that is
	// this one.
	probe := tpm2.GetCapability{Capability: tpm2.TPMCapTPMProperties, Property: uint32(tpm2.TPMPTManufacturer), PropertyCount: 1}
	if _, err := probe.Execute(transport.FromReadWriter(held)); err != nil {
		t.Fatal(err)
	}

	start := time.Now()
	tp, err := OpenTransport(sw.URI)
	took := time.Since(start)
	if err == nil {
		tp.Close()
		t.Fatal("a second open of swtpm succeeded while the first held its connection")
	}
	if !errors.Is(err, ErrBusy) {
		t.Errorf("OpenTransport(held) = %v, want ErrBusy", err)
	}
	for _, who := range []string{"aziot-tpmd", "edge-relay", "systemctl stop aziot-tpmd"} {
		if !strings.Contains(err.Error(), who) {
			t.Errorf("OpenTransport(held) = %v, want it to name %q", err, who)
		}
	}
	// The bound is the probe's, with room for a busy machine; the old
	// behaviour was a two-minute I/O timeout.
	if took > 20*time.Second {
		t.Errorf("OpenTransport(held) took %v, want a few seconds", took)
	}
}
