package enroll

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"

	"github.com/edgetpm/edgetpm/internal/dpsservice"
)

// DefaultOpsPerMinute is DPS's rate limit on service operations, per unit
// of an S1 instance: "Operations 1,000/min/service" (Azure docs,
// includes/iot-dps-limits.md, 2021-10-10). Every call is an operation, and
// each enrollment of a bulk operation one (docs/dps-protocol.md#throttling).
const DefaultOpsPerMinute = 1000

// Meter paces the operations of runs under an operations-per-minute budget
// and counts them, and the 429 answers DPS gives anyway. Share one between
// the runs and the dpsservice.Client (OnRetry) of a process. It is safe for
// concurrent use.
type Meter struct {
	lim       *rate.Limiter
	ops       atomic.Int64
	throttled atomic.Int64
}

// NewMeter returns a Meter admitting at most opsPerMinute operations in any
// minute; zero or less means no pacing.
func NewMeter(opsPerMinute int) *Meter {
	if opsPerMinute <= 0 {
		return &Meter{lim: rate.NewLimiter(rate.Inf, dpsservice.MaxBulk)}
	}
	// A bucket of one bulk operation, refilled so that the bucket and a
	// minute's refill together make the budget: no sliding minute then
	// holds more.
	burst := min(dpsservice.MaxBulk, opsPerMinute)
	per := max(float64(opsPerMinute-burst), 1) / 60
	return &Meter{lim: rate.NewLimiter(rate.Limit(per), burst)}
}

// errNotSent marks the error of a request the meter held back.
var errNotSent = errors.New("not sent")

// wait takes n operations from the budget, waiting for them; its error
// is errNotSent's.
func (m *Meter) wait(ctx context.Context, n int) error {
	if err := m.lim.WaitN(ctx, n); err != nil {
		return fmt.Errorf("%w: %w", errNotSent, err)
	}
	m.ops.Add(int64(n))
	return nil
}

// OnRetry counts a 429 answer, and charges the budget for the request
// the client sends again, which DPS counts again: set it as
// dpsservice.Client.OnRetry.
func (m *Meter) OnRetry(status int, _ time.Duration) {
	if status == http.StatusTooManyRequests {
		m.throttled.Add(1)
	}
	// The hook does not say how many enrollments the request carries:
	// charge the most a request can.
	m.lim.ReserveN(time.Now(), dpsservice.MaxBulk)
}

// Counts returns the operations admitted and the 429 answers so far.
func (m *Meter) Counts() (ops, throttled int64) {
	return m.ops.Load(), m.throttled.Load()
}

// metered is a Service whose calls take their operations from a Meter
// first.
type metered struct {
	Service
	m *Meter
}

func (s metered) GetEnrollment(ctx context.Context, id string) (*dpsservice.Enrollment, error) {
	if err := s.m.wait(ctx, 1); err != nil {
		return nil, err
	}
	return s.Service.GetEnrollment(ctx, id)
}

func (s metered) QueryPage(ctx context.Context, query string, pageSize int, continuation string) ([]dpsservice.Enrollment, string, error) {
	if err := s.m.wait(ctx, 1); err != nil {
		return nil, "", err
	}
	return s.Service.QueryPage(ctx, query, pageSize, continuation)
}

func (s metered) PutEnrollment(ctx context.Context, e dpsservice.Enrollment, ifMatch string) (*dpsservice.Enrollment, error) {
	if err := s.m.wait(ctx, 1); err != nil {
		return nil, err
	}
	return s.Service.PutEnrollment(ctx, e, ifMatch)
}

func (s metered) DeleteEnrollment(ctx context.Context, id, ifMatch string) error {
	if err := s.m.wait(ctx, 1); err != nil {
		return err
	}
	return s.Service.DeleteEnrollment(ctx, id, ifMatch)
}

func (s metered) Bulk(ctx context.Context, mode string, es []dpsservice.Enrollment) (*dpsservice.BulkResult, error) {
	if err := s.m.wait(ctx, len(es)); err != nil {
		return nil, err
	}
	return s.Service.Bulk(ctx, mode, es)
}
