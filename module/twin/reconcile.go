package twin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/edgetpm/edgetpm/internal/atomicfile"
	"github.com/edgetpm/edgetpm/internal/backoff"
)

// DefaultTimeout bounds each Get and Report when Reconciler.Timeout is 0.
const DefaultTimeout = time.Minute

// Reconciler applies desired properties exactly once per version. Its
// methods are safe for concurrent use; applying is serialized, and
// reporting is not done under the same lock, so that an answer lost on
// the way holds up neither later versions nor the Get of a Sync.
type Reconciler struct {
	// Get fetches the full twin: {"desired":{...},"reported":{...}}.
	Get func(ctx context.Context) ([]byte, error)
	// Report merges a patch into the reported properties.
	Report func(ctx context.Context, patch []byte) error
	// Timeout bounds each call of Get and Report (default
	// DefaultTimeout), whatever bounds they set themselves.
	Timeout time.Duration
	// Retry paces Connected's Syncs after a failure (default 1 s to
	// 1 min).
	Retry backoff.Backoff
	// Apply puts a validated configuration into effect, live, on the ctx
	// of the Start, Sync or Patch that calls it.
	Apply func(ctx context.Context, c Config) error
	// StatePath keeps the last good configuration (0600), so the module
	// starts with it while offline.
	StatePath string
	// Counters, when set, adds the module's counters to each report.
	Counters func() any
	Log      zerolog.Logger

	mu       sync.Mutex
	version  int64          // desired $version applied (or rejected)
	desired  map[string]any // the desired document at version
	good     Config
	goodAt   int64 // the desired $version good came from; 0 for the defaults
	applies  int   // calls of apply, so a Sync can tell its GET went stale
	connects int   // calls of Connected; an older one stops retrying

	// The report of the latest version applied or rejected, numbered;
	// sent is the number of the last one the hub took. Guarded by mu.
	report     []byte
	reportSeq  uint64
	reportSent uint64
	reportMu   sync.Mutex // held while sending, so reports go out in order
}

// state is what StatePath holds.
type state struct {
	Version int64  `json:"version"`
	Config  Config `json:"config"`
}

// Start loads the last good configuration (the defaults when there is
// none), applies it and returns it.
func (r *Reconciler) Start(ctx context.Context) (Config, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.good = Defaults()
	b, err := os.ReadFile(r.StatePath)
	switch {
	case errors.Is(err, os.ErrNotExist):
	case err != nil:
		return Config{}, fmt.Errorf("read last configuration: %w", err)
	default:
		var st state
		if err := json.Unmarshal(b, &st); err != nil {
			r.Log.Warn().Err(err).Msg("last configuration unreadable; starting from the defaults")
		} else if err := st.Config.Validate(); err != nil {
			r.Log.Warn().Err(err).Msg("last configuration invalid; starting from the defaults")
		} else {
			r.good, r.goodAt = st.Config, st.Version
		}
	}
	return r.good, r.Apply(ctx, r.good)
}

// Connected brings the configuration up to date after a connect, since
// patches are not queued while away: a Sync, tried again with backoff
// after a failure (a lost answer, a report the hub did not take) until
// one succeeds, ctx ends or a later Connected takes over.
func (r *Reconciler) Connected(ctx context.Context) {
	r.mu.Lock()
	r.connects++
	n := r.connects
	r.mu.Unlock()
	superseded := func() bool {
		r.mu.Lock()
		defer r.mu.Unlock()
		return r.connects != n
	}
	b := r.Retry
	if b.Base <= 0 {
		b = backoff.Backoff{Base: time.Second, Max: time.Minute}
	}
	for {
		err := r.Sync(ctx)
		if err == nil || ctx.Err() != nil || superseded() {
			return
		}
		wait := b.Next()
		r.Log.Warn().Err(err).Dur("retry_in", wait).Msg("twin sync")
		if backoff.Sleep(ctx, wait) != nil || superseded() {
			return
		}
	}
}

// Sync fetches the whole twin and applies its desired properties, and
// sends a report the hub has not taken yet. Connected calls it on every
// connect.
func (r *Reconciler) Sync(ctx context.Context) error {
	r.mu.Lock()
	applies := r.applies
	r.mu.Unlock()
	b, err := r.get(ctx)
	if err != nil {
		return fmt.Errorf("get twin: %w", err)
	}
	var doc struct {
		Desired map[string]any `json:"desired"`
	}
	if err := json.Unmarshal(b, &doc); err != nil {
		return fmt.Errorf("twin: %w", err)
	}
	v, err := version(doc.Desired)
	if err != nil {
		return err
	}
	r.mu.Lock()
	switch {
	case v == r.version && r.desired != nil:
		// Nothing new.
	case v < r.version && r.applies != applies:
		// A patch applied a later version while this GET was on its way.
		// (With no apply in between, an older version is a twin made anew.)
	default:
		r.desired = doc.Desired
		r.apply(ctx, v)
	}
	r.mu.Unlock()
	return r.sendReport(ctx)
}

// Patch handles a desired patch: ignored at or below the applied version,
// merged at the next one, and a full Sync on a gap.
func (r *Reconciler) Patch(ctx context.Context, patch []byte) error {
	var p map[string]any
	if err := json.Unmarshal(patch, &p); err != nil {
		return fmt.Errorf("desired patch: %w", err)
	}
	v, err := version(p)
	if err != nil {
		return err
	}
	r.mu.Lock()
	switch {
	case r.desired == nil || v > r.version+1:
		r.mu.Unlock()
		r.Log.Info().Int64("version", v).Msg("desired patch after a gap; fetching the twin")
		return r.Sync(ctx)
	case v <= r.version:
		r.mu.Unlock()
		r.Log.Debug().Int64("version", v).Msg("desired patch already applied")
		return nil
	}
	merge(r.desired, p)
	r.apply(ctx, v)
	r.mu.Unlock()
	return r.sendReport(ctx)
}

// Version is the desired $version last applied or rejected.
func (r *Reconciler) Version() int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.version
}

// apply parses r.desired as version v, applies it when valid, keeps it,
// and makes the report of the outcome, which the caller sends with
// sendReport once it has released r.mu. An invalid document keeps the
// last good configuration. The caller holds r.mu.
func (r *Reconciler) apply(ctx context.Context, v int64) {
	r.version = v
	r.applies++
	doc, _ := json.Marshal(r.desired)
	report := Reported{Version: v}
	c, err := Parse(doc)
	if err == nil {
		err = r.Apply(ctx, c)
	}
	if err != nil {
		r.Log.Warn().Err(err).Int64("version", v).Msg("desired properties rejected; keeping the last good configuration")
		report.Status, report.Reason = StatusRejected, err.Error()
	} else {
		r.good, r.goodAt = c, v
		report.Status = StatusApplied
		if err := r.save(v, c); err != nil {
			r.Log.Warn().Err(err).Msg("could not keep the configuration on disk")
		}
		r.Log.Info().Int64("version", v).Msg("desired properties applied")
	}
	report.Effective, report.AppliedVersion = r.good, r.goodAt
	if r.Counters != nil {
		report.Counters = r.Counters()
	}
	patch, err := json.Marshal(ReportedProperties{Configuration: &report})
	if err != nil { // a Config always marshals; Counters are the caller's
		r.Log.Warn().Err(err).Msg("report configuration")
		return
	}
	r.report = patch
	r.reportSeq++
}

// sendReport sends the latest report unless the hub has taken it. Reports
// go out one at a time, in order, and never an older one after a newer:
// a sender that waited behind another sends the latest, and one that
// finds it sent has nothing to do.
func (r *Reconciler) sendReport(ctx context.Context) error {
	r.reportMu.Lock()
	defer r.reportMu.Unlock()
	r.mu.Lock()
	patch, seq, sent := r.report, r.reportSeq, r.reportSent
	r.mu.Unlock()
	if seq == sent {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, r.timeout())
	defer cancel()
	if err := r.Report(ctx, patch); err != nil {
		return fmt.Errorf("report configuration: %w", err)
	}
	r.mu.Lock()
	r.reportSent = seq
	r.mu.Unlock()
	return nil
}

// get calls Get within the timeout.
func (r *Reconciler) get(ctx context.Context) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, r.timeout())
	defer cancel()
	return r.Get(ctx)
}

func (r *Reconciler) timeout() time.Duration {
	if r.Timeout > 0 {
		return r.Timeout
	}
	return DefaultTimeout
}

func (r *Reconciler) save(v int64, c Config) error {
	if r.StatePath == "" {
		return nil
	}
	b, err := json.Marshal(state{v, c})
	if err != nil {
		return err
	}
	return atomicfile.WriteFile(r.StatePath, b, 0o600)
}

// version reads "$version" of a desired document or patch.
func version(doc map[string]any) (int64, error) {
	f, ok := doc["$version"].(float64)
	if !ok || f < 0 || f != float64(int64(f)) {
		return 0, errors.New("desired properties without a valid $version")
	}
	return int64(f), nil
}

// merge applies a JSON merge patch: objects merge recursively, null
// deletes, anything else replaces (docs/edge-protocol.md#twin-reconciliation).
func merge(dst, patch map[string]any) {
	for k, v := range patch {
		switch pv := v.(type) {
		case nil:
			delete(dst, k)
		case map[string]any:
			if dv, ok := dst[k].(map[string]any); ok {
				merge(dv, pv)
				continue
			}
			fresh := map[string]any{}
			merge(fresh, pv)
			dst[k] = fresh
		default:
			dst[k] = v
		}
	}
}
