package enroll

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/edgetpm/edgetpm/internal/dpsservice"
)

// Show returns the enrollments DPS holds for ids, in their order, nil for
// those it has none of, reading them within m's budget (nil: no pacing).
func Show(ctx context.Context, svc Service, ids []string, m *Meter) ([]*dpsservice.Enrollment, error) {
	if m == nil {
		m = unmetered()
	}
	held, err := fetch(ctx, metered{svc, m}, ids)
	if err != nil {
		return nil, err
	}
	out := make([]*dpsservice.Enrollment, len(ids))
	for i, id := range ids {
		out[i] = held[strings.ToLower(id)]
	}
	return out, nil
}

// Disable sets the enrollments of ids to disabled, with the ETags read, so
// that their devices can no longer register; DPS keeps them, and
// 'enroll' with --status enabled brings them back. Of opts, Workers,
// Meter, Progress, DryRun and Now apply.
func Disable(ctx context.Context, svc Service, ids []string, opts Options) (*Report, error) {
	return manage(ctx, svc, ids, opts, Disabled, dpsservice.BulkUpdateIfMatchETag, func(e *dpsservice.Enrollment) bool {
		if e.ProvisioningStatus == dpsservice.StatusDisabled {
			return false
		}
		e.ProvisioningStatus = dpsservice.StatusDisabled
		return true
	})
}

// Delete deletes the enrollments of ids, with the ETags read. Options
// apply as in Disable.
func Delete(ctx context.Context, svc Service, ids []string, opts Options) (*Report, error) {
	return manage(ctx, svc, ids, opts, Deleted, dpsservice.BulkDelete, func(*dpsservice.Enrollment) bool { return true })
}

// manage applies change to the enrollments of ids and writes those it
// changed with mode.
func manage(ctx context.Context, svc Service, ids []string, opts Options, success Outcome, mode string, change func(*dpsservice.Enrollment) bool) (*Report, error) {
	if len(ids) == 0 {
		return nil, errors.New("no registration IDs")
	}
	r := newRun(opts, len(ids))
	svc = r.metered(svc)
	items := make([]*item, len(ids))
	seen := map[string]bool{}
	var valid []string
	for i, id := range ids {
		it := &item{res: &Result{RegistrationID: id}, success: success}
		items[i] = it
		key := strings.ToLower(id)
		switch {
		case !validID(id):
			it.res.Outcome, it.res.Error, it.done = Refused, fmt.Sprintf("registration ID %q: 1 to 128 letters, digits and - . _ :", clip(id)), true
		case seen[key]:
			it.res.Outcome, it.res.Error, it.done = Refused, "registration ID given twice", true
		default:
			seen[key] = true
			valid = append(valid, id)
		}
	}
	held, err := fetch(ctx, svc, valid)
	if err != nil {
		return nil, err
	}
	var writes []*item
	for _, it := range items {
		if it.done {
			continue
		}
		old := held[strings.ToLower(it.res.RegistrationID)]
		if old == nil {
			it.res.Outcome, it.done = Absent, true
			continue
		}
		it.res.DeviceID = old.DeviceID
		if err := tpmOnly(old); err != nil {
			it.res.Outcome, it.res.Error, it.done = Refused, err.Error()+": manage it with the Azure portal or az iot dps", true
			continue
		}
		e := *old
		// What the service owns goes back only as the ETag to match.
		e.CreatedDateTimeUTC, e.LastUpdatedDateTimeUTC, e.RegistrationState = time.Time{}, time.Time{}, nil
		if !change(&e) {
			it.res.Outcome, it.done = Unchanged, true
			continue
		}
		it.want = e
		writes = append(writes, it)
	}
	r.done(count(items))
	err = r.write(ctx, svc, mode, writes)
	return r.finish(items), err
}
