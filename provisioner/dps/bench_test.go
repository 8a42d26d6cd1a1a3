package dps_test

import (
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-tpm/tpm2/transport"

	"github.com/edgetpm/edgetpm/internal/emulator/dpsemu"
	"github.com/edgetpm/edgetpm/internal/testharness/tpmtest"
	"github.com/edgetpm/edgetpm/provisioner/tpm"
)

// counting counts the commands sent to a TPM.
type counting struct {
	transport.TPMCloser
	n atomic.Int64
}

func (c *counting) Send(cmd []byte) ([]byte, error) {
	c.n.Add(1)
	return c.TPMCloser.Send(cmd)
}

// BenchmarkRegister measures a whole registration as the register command
// runs it (identity, challenge, activation, signed PUT, polls, hub key
// import) against the local emulator with retry-after: 1, on swtpm with the
// EK and SRK already persisted. It reports where the time goes.
func BenchmarkRegister(b *testing.B) {
	sw := tpmtest.StartSwtpm(b)
	tr, err := tpm.OpenTransport(sw.URI)
	if err != nil {
		b.Fatal(err)
	}
	ct := &counting{TPMCloser: tr}
	tp, err := tpm.New(ct, tpm.Config{})
	if err != nil {
		b.Fatal(err)
	}
	defer tp.Close()
	id, err := tp.Identity(b.Context()) // persists the EK and SRK
	if err != nil {
		b.Fatal(err)
	}
	l := newLab(b, dpsemu.Config{RetryAfter: 1}, nil)
	l.enroll(b, id, nil)
	c := l.client(nil)
	var tpmTime, httpTime, wait time.Duration
	var polls int
	ct.n.Store(0)
	b.ResetTimer()
	for b.Loop() {
		id, err := tp.Identity(b.Context())
		if err != nil {
			b.Fatal(err)
		}
		res, err := c.Register(b.Context(), tp, request(id))
		if err != nil {
			b.Fatal(err)
		}
		tpmTime += res.Timing.TPM
		httpTime += res.Timing.HTTP
		wait += res.Timing.Wait
		polls += res.Timing.Polls
	}
	n := float64(b.N)
	b.ReportMetric(float64(tpmTime.Milliseconds())/n, "tpm-ms/op")
	b.ReportMetric(float64(httpTime.Milliseconds())/n, "http-ms/op")
	b.ReportMetric(float64(wait.Milliseconds())/n, "wait-ms/op")
	b.ReportMetric(float64(polls)/n, "polls/op")
	b.ReportMetric(float64(ct.n.Load())/n, "tpm-cmds/op")
}
