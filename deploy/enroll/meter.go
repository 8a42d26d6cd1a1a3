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
// minute. The budget must hold one bulk operation: at least
// dpsservice.MaxBulk.
func NewMeter(opsPerMinute int) (*Meter, error) {
	if opsPerMinute < dpsservice.MaxBulk {
		return nil, fmt.Errorf("%d operations a minute: want at least %d, one bulk operation", opsPerMinute, dpsservice.MaxBulk)
	}
	// A bucket of one bulk operation, refilled so that the bucket and a
	// minute's refill together make the budget: no sliding minute then
	// holds more.
	per := max(float64(opsPerMinute-dpsservice.MaxBulk), 1) / 60
	return &Meter{lim: rate.NewLimiter(rate.Limit(per), dpsservice.MaxBulk)}, nil
}

// unmetered returns a Meter that counts and does not pace.
func unmetered() *Meter {
	return &Meter{lim: rate.NewLimiter(rate.Inf, dpsservice.MaxBulk)}
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
// the client sends again, which DPS counts again: as many operations as
// the metered call that ctx belongs to carries (one outside a metered
// call). Set it as dpsservice.Client.OnRetry.
func (m *Meter) OnRetry(ctx context.Context, status int, _ time.Duration) {
	if status == http.StatusTooManyRequests {
		m.throttled.Add(1)
	}
	n, ok := ctx.Value(opsKey{}).(int)
	if !ok {
		n = 1
	}
	m.lim.ReserveN(time.Now(), n)
}

// opsKey is the context key of the operations a metered call carries.
type opsKey struct{}

// withOps returns ctx for a call of n operations.
func withOps(ctx context.Context, n int) context.Context {
	return context.WithValue(ctx, opsKey{}, n)
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
	return s.Service.GetEnrollment(withOps(ctx, 1), id)
}

func (s metered) QueryPage(ctx context.Context, query string, pageSize int, continuation string) ([]dpsservice.Enrollment, string, error) {
	if err := s.m.wait(ctx, 1); err != nil {
		return nil, "", err
	}
	return s.Service.QueryPage(withOps(ctx, 1), query, pageSize, continuation)
}

func (s metered) PutEnrollment(ctx context.Context, e dpsservice.Enrollment, ifMatch string) (*dpsservice.Enrollment, error) {
	if err := s.m.wait(ctx, 1); err != nil {
		return nil, err
	}
	return s.Service.PutEnrollment(withOps(ctx, 1), e, ifMatch)
}

func (s metered) DeleteEnrollment(ctx context.Context, id, ifMatch string) error {
	if err := s.m.wait(ctx, 1); err != nil {
		return err
	}
	return s.Service.DeleteEnrollment(withOps(ctx, 1), id, ifMatch)
}

func (s metered) Bulk(ctx context.Context, mode string, es []dpsservice.Enrollment) (*dpsservice.BulkResult, error) {
	if err := s.m.wait(ctx, len(es)); err != nil {
		return nil, err
	}
	return s.Service.Bulk(withOps(ctx, len(es)), mode, es)
}
