package twin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sync"

	"github.com/rs/zerolog"

	"github.com/edgetpm/edgetpm/internal/atomicfile"
)

// Reconciler applies desired properties exactly once per version. Its
// methods are safe for concurrent use; calls are serialized.
type Reconciler struct {
	// Get fetches the full twin: {"desired":{...},"reported":{...}}.
	Get func(ctx context.Context) ([]byte, error)
	// Report merges a patch into the reported properties.
	Report func(ctx context.Context, patch []byte) error
	// Apply puts a validated configuration into effect, live, on the ctx
	// of the Start, Sync or Patch that calls it.
	Apply func(ctx context.Context, c Config) error
	// StatePath keeps the last good configuration (0600), so the module
	// starts with it while offline.
	StatePath string
	// Counters, when set, adds the module's counters to each report.
	Counters func() any
	Log      zerolog.Logger

	mu      sync.Mutex
	version int64          // desired $version applied (or rejected)
	desired map[string]any // the desired document at version
	good    Config
	goodAt  int64 // the desired $version good came from; 0 for the defaults
	applies int   // calls of apply, so a Sync can tell its GET went stale
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

// Sync fetches the whole twin and applies its desired properties: call it
// on every connect, since patches are not queued while away.
func (r *Reconciler) Sync(ctx context.Context) error {
	r.mu.Lock()
	applies := r.applies
	r.mu.Unlock()
	b, err := r.Get(ctx)
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
	defer r.mu.Unlock()
	switch {
	case v == r.version && r.desired != nil:
		return nil // nothing new
	case v < r.version && r.applies != applies:
		// A patch applied a later version while this GET was on its way.
		// (With no apply in between, an older version is a twin made anew.)
		return nil
	}
	r.desired = doc.Desired
	return r.apply(ctx, v)
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
	defer r.mu.Unlock()
	merge(r.desired, p)
	return r.apply(ctx, v)
}

// Version is the desired $version last applied or rejected.
func (r *Reconciler) Version() int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.version
}

// apply parses r.desired as version v, applies it when valid, keeps it,
// and reports the outcome. An invalid document keeps the last good
// configuration. The caller holds r.mu.
func (r *Reconciler) apply(ctx context.Context, v int64) error {
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
	if err != nil {
		return fmt.Errorf("report configuration: %w", err)
	}
	if err := r.Report(ctx, patch); err != nil {
		return fmt.Errorf("report configuration: %w", err)
	}
	return nil
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
