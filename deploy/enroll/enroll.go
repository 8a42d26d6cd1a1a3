package enroll

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"reflect"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/edgetpm/edgetpm/internal/dpsservice"
)

// Service is the part of DPS's service API enroll uses:
// *dpsservice.Client.
type Service interface {
	GetEnrollment(ctx context.Context, registrationID string) (*dpsservice.Enrollment, error)
	QueryPage(ctx context.Context, query string, pageSize int, continuation string) ([]dpsservice.Enrollment, string, error)
	PutEnrollment(ctx context.Context, e dpsservice.Enrollment, ifMatch string) (*dpsservice.Enrollment, error)
	DeleteEnrollment(ctx context.Context, registrationID, ifMatch string) error
	Bulk(ctx context.Context, mode string, es []dpsservice.Enrollment) (*dpsservice.BulkResult, error)
}

// Outcome is what happened to one identity's enrollment. In a dry run it
// is what would have happened.
type Outcome string

// Outcomes.
const (
	Created   Outcome = "created"
	Updated   Outcome = "updated"
	Unchanged Outcome = "unchanged"
	Disabled  Outcome = "disabled"
	Deleted   Outcome = "deleted"
	// Absent: there is no enrollment to disable or delete.
	Absent Outcome = "absent"
	// Conflict: the enrollment changed in DPS between the read and the
	// write (412), or appeared there (409); a re-run settles it.
	Conflict Outcome = "conflict"
	// Refused: not sent to DPS: a non-genuine or unverifiable EK, a bad
	// record, a registration ID given twice.
	Refused Outcome = "refused"
	// Failed: DPS refused the write, or it could not be made.
	Failed Outcome = "failed"
)

// Result is one identity's line of a Report.
type Result struct {
	RegistrationID string  `json:"registrationId"`
	Line           int     `json:"line,omitempty"`
	DeviceID       string  `json:"deviceId,omitempty"`
	Outcome        Outcome `json:"outcome"`
	// Changes names the enrollment fields an update changes.
	Changes []string `json:"changes,omitempty"`
	// EK is what the EK check found; nil for disable and delete.
	EK    *Check `json:"ek,omitempty"`
	Error string `json:"error,omitempty"`
}

// Report is the outcome of a run.
type Report struct {
	DryRun  bool            `json:"dryRun,omitempty"`
	Results []Result        `json:"identities"`
	Totals  map[Outcome]int `json:"totals"`
	// Duration is the run's wall time; Operations the DPS operations
	// made (a call, or an enrollment of a bulk operation; retries not
	// counted), OperationsPerMinute their rate; Throttled the 429
	// answers DPS gave.
	Duration            time.Duration `json:"-"`
	Seconds             float64       `json:"durationSeconds"`
	Operations          int64         `json:"operations"`
	OperationsPerMinute float64       `json:"operationsPerMinute"`
	Throttled           int64         `json:"throttled"`
}

// OK reports whether every identity is as asked: nothing refused, failed
// or in conflict.
func (r *Report) OK() bool {
	return r.Totals[Refused]+r.Totals[Failed]+r.Totals[Conflict] == 0
}

// Options configure a run.
type Options struct {
	// Settings apply to every identity, under its record's own.
	Settings Settings
	// Verifier checks EK certificates; nil checks none, which needs
	// AllowUnverified.
	Verifier Verifier
	// AllowUnverified enrolls an EK whose certificate is missing or does
	// not verify, marked in the report and in the initial twin's tags.
	AllowUnverified bool
	// DryRun reads DPS and reports, and writes nothing.
	DryRun bool
	// Workers is how many requests are in flight; zero means 4.
	Workers int
	// Meter paces and counts the operations; nil means no pacing, and
	// no count of 429s, which needs Meter.OnRetry on the client.
	Meter *Meter
	// Progress, when set, is told how many identities are done; calls
	// come one at a time, in order.
	Progress func(done, total int)
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// getMax is the most enrollments read one GET at a time; more are read by
// querying all of DPS's, up to queryPage a request.
const (
	getMax    = 50
	queryPage = 1000
)

// item is one identity on its way through a run.
type item struct {
	res     *Result
	want    dpsservice.Enrollment // what is sent
	done    bool
	success Outcome
}

// Enroll makes DPS hold, for each record, the enrollment opts and the
// record ask for: it checks the EKs, reads what DPS holds, and creates or
// updates (with the ETag read) only what differs, in bulk operations of
// dpsservice.MaxBulk. The report has a line per record, in order. The
// error is for a run that could not be made (DPS unreadable, ctx ended);
// refusals and per-enrollment failures are in the report.
func Enroll(ctx context.Context, svc Service, recs []Record, opts Options) (*Report, error) {
	r := newRun(opts, len(recs))
	svc = r.metered(svc)
	if opts.Verifier == nil && !opts.AllowUnverified {
		return nil, errors.New("no EK certificate verifier: EKs can be enrolled unverified only when allowed")
	}
	if err := opts.Settings.Validate(); err != nil {
		return nil, err
	}
	if opts.Settings.DeviceID != "" && len(recs) > 1 {
		return nil, fmt.Errorf("one device ID for %d identities: give each its deviceId in the file", len(recs))
	}
	items := make([]*item, len(recs))
	seen := map[string]int{}
	var ids []string
	for i := range recs {
		rec := &recs[i]
		it := &item{res: &Result{RegistrationID: rec.RegistrationID, Line: rec.Line}}
		items[i] = it
		refuse := func(format string, args ...any) {
			it.res.Outcome, it.res.Error, it.done = Refused, fmt.Sprintf(format, args...), true
		}
		if !validID(rec.RegistrationID) {
			refuse("registration ID %q: 1 to 128 letters, digits and - . _ :", clip(rec.RegistrationID))
			continue
		}
		key := strings.ToLower(rec.RegistrationID)
		if line, dup := seen[key]; dup {
			if line > 0 {
				refuse("registration ID also on line %d", line)
			} else {
				refuse("registration ID given twice")
			}
			continue
		}
		seen[key] = rec.Line
		s, err := opts.Settings.over(rec)
		if err != nil {
			refuse("%v", err)
			continue
		}
		it.res.DeviceID = s.DeviceID
		ek, err := decodeEK(rec.EndorsementKey)
		if err != nil {
			refuse("%v", err)
			continue
		}
		c := check(opts.Verifier, rec, ek)
		it.res.EK = c
		if c.WrongKey {
			refuse("%s: the EK and its certificate belong to two TPMs", c.Problem)
			continue
		}
		if !c.Verified && !opts.AllowUnverified {
			refuse("EK not verified: %s (--allow-unverified enrolls it, marked)", c.Problem)
			continue
		}
		it.want = s.enrollment(rec.RegistrationID, ek, c)
		ids = append(ids, rec.RegistrationID)
	}

	held, err := fetch(ctx, svc, ids)
	if err != nil {
		return nil, err
	}
	var creates, updates []*item
	for _, it := range items {
		if it.done {
			continue
		}
		old := held[strings.ToLower(it.want.RegistrationID)]
		if old == nil {
			it.want = created(it.want)
			it.success = Created
			creates = append(creates, it)
			continue
		}
		if err := tpmOnly(old); err != nil {
			it.res.Outcome, it.res.Error, it.done = Conflict, err.Error()+"; not overwritten", true
			continue
		}
		if it.res.Changes = diff(old, &it.want); len(it.res.Changes) == 0 {
			it.res.Outcome, it.done = Unchanged, true
			continue
		}
		it.want = update(old, &it.want)
		it.success = Updated
		updates = append(updates, it)
	}
	r.done(count(items))
	err = r.write(ctx, svc, dpsservice.BulkCreate, creates)
	if err == nil {
		err = r.write(ctx, svc, dpsservice.BulkUpdateIfMatchETag, updates)
	}
	return r.finish(items), err
}

func count(items []*item) int {
	n := 0
	for _, it := range items {
		if it.done {
			n++
		}
	}
	return n
}

// run is the bookkeeping of one call.
type run struct {
	opts  Options
	start time.Time
	ops0  int64
	thr0  int64
	rep   *Report

	mu       sync.Mutex
	finished int
}

func newRun(opts Options, n int) *run {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Workers <= 0 {
		opts.Workers = 4
	}
	if opts.Meter == nil {
		opts.Meter = unmetered()
	}
	r := &run{opts: opts, start: opts.Now(), rep: &Report{DryRun: opts.DryRun, Results: make([]Result, n)}}
	r.ops0, r.thr0 = opts.Meter.Counts()
	return r
}

func (r *run) metered(svc Service) Service { return metered{svc, r.opts.Meter} }

// done counts n more identities done and tells Progress, under the lock
// so that the counts it is told never go backwards.
func (r *run) done(n int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.finished += n
	if r.opts.Progress != nil && n > 0 {
		r.opts.Progress(r.finished, len(r.rep.Results))
	}
}

func (r *run) finish(items []*item) *Report {
	rep := r.rep
	rep.Totals = map[Outcome]int{}
	for i, it := range items {
		if it.res.Outcome == "" { // not reached: ctx ended first
			it.res.Outcome, it.res.Error = Failed, "not sent: the run was stopped"
		}
		rep.Results[i] = *it.res
		rep.Totals[it.res.Outcome]++
	}
	rep.Duration = r.opts.Now().Sub(r.start)
	rep.Seconds = rep.Duration.Seconds()
	ops, thr := r.opts.Meter.Counts()
	rep.Operations, rep.Throttled = ops-r.ops0, thr-r.thr0
	if rep.Duration > 0 {
		rep.OperationsPerMinute = float64(rep.Operations) / rep.Duration.Minutes()
	}
	return rep
}

// write sends items' enrollments with mode, in batches of MaxBulk on
// Workers goroutines; one update or delete alone goes as a PUT or DELETE
// with If-Match, as cheap and with an exact error. Creates always go in
// bulk: a PUT without If-Match would overwrite an enrollment that appeared
// after the read, where a bulk create answers 409. A dry run only sets the
// outcomes.
func (r *run) write(ctx context.Context, svc Service, mode string, items []*item) error {
	if r.opts.DryRun {
		for _, it := range items {
			it.res.Outcome = it.success
		}
		r.done(len(items))
		return nil
	}
	batches := make(chan []*item)
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		defer close(batches)
		for b := range slices.Chunk(items, dpsservice.MaxBulk) {
			select {
			case batches <- b:
			case <-gctx.Done():
				return context.Cause(gctx)
			}
		}
		return nil
	})
	for range r.opts.Workers {
		g.Go(func() error {
			for b := range batches {
				if err := r.send(gctx, svc, mode, b); err != nil {
					return err
				}
				r.done(len(b))
			}
			return nil
		})
	}
	return g.Wait()
}

// send writes one batch and sets its outcomes. Its error is only ctx's.
func (r *run) send(ctx context.Context, svc Service, mode string, b []*item) error {
	if len(b) == 1 && mode != dpsservice.BulkCreate {
		it := b[0]
		var err error
		switch mode {
		case dpsservice.BulkDelete:
			err = svc.DeleteEnrollment(ctx, it.want.RegistrationID, it.want.ETag)
		default: // the PUT's If-Match takes the place of updateIfMatchETag
			_, err = svc.PutEnrollment(ctx, it.want, it.want.ETag)
		}
		if err != nil && ctx.Err() != nil {
			return stopped(ctx, b, err)
		}
		it.settle(err)
		return nil
	}
	es := make([]dpsservice.Enrollment, len(b))
	for i, it := range b {
		es[i] = it.want
	}
	res, err := svc.Bulk(ctx, mode, es)
	if err != nil && ctx.Err() != nil {
		return stopped(ctx, b, err)
	}
	if err != nil {
		for _, it := range b {
			it.settle(err)
		}
		return nil
	}
	failed := map[string]dpsservice.BulkError{}
	for _, e := range res.Errors {
		failed[strings.ToLower(e.RegistrationID)] = e
	}
	for _, it := range b {
		e, ok := failed[strings.ToLower(it.want.RegistrationID)]
		switch {
		case !ok && !res.IsSuccessful && len(res.Errors) == 0:
			it.settle(errors.New("DPS reported the bulk operation unsuccessful, naming no enrollment"))
		case !ok:
			it.settle(nil)
		default:
			it.settle(&dpsservice.ServiceError{HTTPStatus: e.ErrorCode / 1000, Code: e.ErrorCode, Message: e.ErrorStatus})
		}
	}
	return nil
}

// stopped settles a batch whose write ended with err because ctx ended,
// and returns ctx's cause. A batch the meter held back was not sent, and
// is left for finish to report so; any other may have reached DPS.
func stopped(ctx context.Context, b []*item, err error) error {
	if !errors.Is(err, errNotSent) {
		for _, it := range b {
			it.res.Outcome, it.res.Error = Failed, "sent, outcome unknown: the run was stopped; run again"
		}
	}
	return context.Cause(ctx)
}

// settle sets the outcome of a write that ended with err.
func (it *item) settle(err error) {
	var se *dpsservice.ServiceError
	switch {
	case err == nil:
		it.res.Outcome = it.success
	case errors.As(err, &se) && (se.HTTPStatus == http.StatusPreconditionFailed || se.HTTPStatus == http.StatusConflict):
		it.res.Outcome, it.res.Error = Conflict, err.Error()
	case errors.As(err, &se) && se.HTTPStatus == http.StatusNotFound && it.success == Deleted:
		it.res.Outcome = Absent
	default:
		it.res.Outcome, it.res.Error = Failed, err.Error()
	}
}

// fetch returns the enrollments DPS holds for ids, by lowercase
// registration ID: a GET each for a few, else every page of a query of
// all enrollments, which costs one operation per queryPage.
func fetch(ctx context.Context, svc Service, ids []string) (map[string]*dpsservice.Enrollment, error) {
	held := map[string]*dpsservice.Enrollment{}
	if len(ids) == 0 {
		return held, nil
	}
	if len(ids) <= getMax {
		for _, id := range ids {
			e, err := svc.GetEnrollment(ctx, id)
			var se *dpsservice.ServiceError
			switch {
			case errors.As(err, &se) && se.HTTPStatus == http.StatusNotFound:
			case err != nil:
				return nil, err
			default:
				held[strings.ToLower(id)] = e
			}
		}
		return held, nil
	}
	cont := ""
	for {
		page, next, err := svc.QueryPage(ctx, "SELECT * FROM enrollments", queryPage, cont)
		if err != nil {
			return nil, err
		}
		for i := range page {
			held[strings.ToLower(page[i].RegistrationID)] = &page[i]
		}
		if next == "" {
			return held, nil
		}
		if next == cont {
			return nil, errors.New("query enrollments: DPS gave the same continuation twice")
		}
		cont = next
	}
}

// tpmOnly refuses an enrollment of another attestation type than TPM:
// this tool neither models nor manages them.
func tpmOnly(e *dpsservice.Enrollment) error {
	if e.Attestation.Type != "tpm" || e.Attestation.TPM == nil {
		return fmt.Errorf("DPS holds an enrollment of attestation type %q under this registration ID, not a TPM one", clip(e.Attestation.Type))
	}
	return nil
}

// update returns the enrollment to send to change old to want: DPS
// replaces the whole enrollment on a write, so it is old, with the fields
// want asks for, and the fields old holds that want does not (allocation
// and hubs not asked for, fields not modelled) kept; the service-owned
// fields go back only as the ETag to match.
func update(old, want *dpsservice.Enrollment) dpsservice.Enrollment {
	e := *old
	e.CreatedDateTimeUTC, e.LastUpdatedDateTimeUTC, e.RegistrationState = time.Time{}, time.Time{}, nil
	e.DeviceID = want.DeviceID
	if !bytes.Equal(old.Attestation.TPM.EndorsementKey, want.Attestation.TPM.EndorsementKey) {
		e.Attestation = want.Attestation // another TPM: the old SRK is not its
	}
	switch {
	case want.AllocationPolicy != "":
		e.AllocationPolicy = want.AllocationPolicy
	case e.AllocationPolicy == dpsservice.AllocationStatic && len(want.IoTHubs) > 1:
		e.AllocationPolicy = dpsservice.AllocationHashed // static takes one hub
	}
	if len(want.IoTHubs) > 0 {
		e.IoTHubs = want.IoTHubs
	}
	if want.ProvisioningStatus != "" {
		e.ProvisioningStatus = want.ProvisioningStatus
	}
	if want.Capabilities != nil {
		e.Capabilities = want.Capabilities
	}
	if want.ReprovisionPolicy != nil {
		e.ReprovisionPolicy = want.ReprovisionPolicy
	}
	e.InitialTwin = want.InitialTwin
	return e
}

// diff names the fields where the enrollment DPS holds differs from the
// one asked for. Only the fields asked for count, but for the device ID,
// the EK and the twin, which a run always gives; the twin is compared as JSON, without the $version
// and $metadata DPS adds.
func diff(old, want *dpsservice.Enrollment) []string {
	var d []string
	if old.DeviceID != want.DeviceID {
		d = append(d, "deviceId")
	}
	if old.Attestation.Type != "tpm" || old.Attestation.TPM == nil || !bytes.Equal(old.Attestation.TPM.EndorsementKey, want.Attestation.TPM.EndorsementKey) {
		d = append(d, "endorsementKey")
	}
	if want.AllocationPolicy != "" && old.AllocationPolicy != want.AllocationPolicy {
		d = append(d, "allocationPolicy")
	}
	if len(want.IoTHubs) > 0 && !sameHubs(old.IoTHubs, want.IoTHubs) {
		d = append(d, "iotHubs")
	}
	if want.ProvisioningStatus != "" && orDefault(old.ProvisioningStatus, dpsservice.StatusEnabled) != want.ProvisioningStatus {
		d = append(d, "provisioningStatus")
	}
	if want.Capabilities != nil && (old.Capabilities != nil && old.Capabilities.IoTEdge) != want.Capabilities.IoTEdge {
		d = append(d, "capabilities")
	}
	oldRP := old.ReprovisionPolicy
	if oldRP == nil {
		oldRP = reprovisionPolicy("")
	}
	if want.ReprovisionPolicy != nil && *oldRP != *want.ReprovisionPolicy {
		d = append(d, "reprovisionPolicy")
	}
	if !sameTwin(old.InitialTwin, want.InitialTwin) {
		d = append(d, "initialTwin")
	}
	return d
}

func sameHubs(a, b []string) bool {
	norm := func(hs []string) []string {
		out := make([]string, len(hs))
		for i, h := range hs {
			out[i] = strings.ToLower(h)
		}
		slices.Sort(out)
		return slices.Compact(out)
	}
	return slices.Equal(norm(a), norm(b))
}

func sameTwin(a, b json.RawMessage) bool {
	return reflect.DeepEqual(twinValue(a), twinValue(b))
}

// twinValue decodes a twin for comparison: no $ keys, no empty objects
// ({"tags":{}} is no tags), nil for none.
func twinValue(raw json.RawMessage) any {
	var v any
	if len(raw) == 0 || json.Unmarshal(raw, &v) != nil {
		return nil
	}
	return strip(v)
}

func strip(v any) any {
	m, ok := v.(map[string]any)
	if !ok {
		return v
	}
	out := map[string]any{}
	for k, x := range m {
		if strings.HasPrefix(k, "$") {
			continue
		}
		if x = strip(x); x != nil {
			out[k] = x
		}
	}
	if len(out) == 0 {
		return nil
	}
	return out
}
