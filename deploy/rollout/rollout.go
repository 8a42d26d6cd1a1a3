// Package rollout rolls a deployment out to a fleet in waves through IoT
// Hub automatic deployments (docs/edge-protocol.md#iot-hub-service-api): each wave is a
// configuration with its own target condition, created once the wave
// before it is healthy. Health is read from the configuration's metrics:
// the devices whose edgeAgent reported the deployment applied (success)
// or failed, against the devices targeted, within a time limit. An
// unhealthy wave halts the rollout; what it leaves behind is reported,
// and Rollback removes the failed wave's configuration so that its
// devices go back to the deployment they had.
package rollout

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math"
	"strings"
	"time"

	"github.com/edgetpm/edgetpm/internal/hubservice"
)

// Hub is the part of IoT Hub's service API a rollout uses.
type Hub interface {
	PutConfiguration(ctx context.Context, cfg hubservice.Configuration, ifMatch string) (*hubservice.Configuration, error)
	GetConfiguration(ctx context.Context, id string) (*hubservice.Configuration, error)
	DeleteConfiguration(ctx context.Context, id, ifMatch string) error
}

// The metric names every wave's configuration carries.
const (
	MetricSucceeded = "reportedSuccessCount"
	MetricFailed    = "reportedFailedCount"
)

// metricQueries count the edgeAgents of the devices where configuration id
// is in effect, by the status each reported for the desired properties it
// last received (200 applied; anything else failed). IoT Hub runs metric
// queries over the whole hub, so the configurations clause is what keeps
// the old deployment's reports out of a wave's counts.
func metricQueries(id string) map[string]string {
	q := "SELECT deviceId FROM devices.modules WHERE moduleId='$edgeAgent' AND configurations.[[" + id + "]].status='Applied' AND properties.reported.lastDesiredStatus.code "
	return map[string]string{MetricSucceeded: q + "= 200", MetricFailed: q + "!= 200"}
}

// LabelRollout and LabelWave mark a rollout's configurations.
const (
	LabelRollout = "edge-deploy-rollout"
	LabelWave    = "edge-deploy-wave"
)

// Plan is a rollout.
type Plan struct {
	// ID names the rollout; wave i's configuration is "<ID>-<wave name>".
	ID string
	// Content is the deployment, {"modulesContent": {...}}.
	Content json.RawMessage
	// Priority of the last wave's configuration, above the deployment
	// the fleet has now; each wave before it gets one more.
	Priority int
	// Labels are added to every wave's configuration.
	Labels map[string]string
	Waves  []Wave
	// Poll is how often health is read; 0 means 10 s.
	Poll time.Duration
}

// Wave is one step of the rollout.
type Wave struct {
	Name string
	// Target is the wave's targetCondition, e.g. "tags.ring='canary'".
	// Waves usually grow: each target includes the ones before.
	Target string
	// MinSuccess is the share of targeted devices that must report
	// success (0 to 1; 0 means all of them).
	MinSuccess float64
	// MaxFailures is how many reported failures the wave tolerates.
	MaxFailures int64
	// Timeout bounds the wait for MinSuccess.
	Timeout time.Duration
}

// WaveStatus is what IoT Hub reports of a wave's configuration.
type WaveStatus struct {
	Wave          string `json:"wave"`
	Configuration string `json:"configuration"`
	Exists        bool   `json:"exists"`
	Targeted      int64  `json:"targeted"`
	// Applied counts the devices under this wave's configuration; those
	// an earlier wave took stay under that one.
	Applied int64 `json:"applied"`
	// Succeeded and Failed count the targeted devices by what their
	// edgeAgent reported, under this wave or an earlier one.
	Succeeded int64 `json:"succeeded"`
	Failed    int64 `json:"failed"`
	// Verdict is "healthy", "unhealthy", "waiting" or "not started".
	Verdict string `json:"verdict"`
	Reason  string `json:"reason,omitempty"`
}

// Report is where a rollout ended.
type Report struct {
	Rollout string       `json:"rollout"`
	Waves   []WaveStatus `json:"waves"`
	// Halted names the unhealthy wave; empty when every wave is healthy.
	Halted string `json:"halted,omitempty"`
}

// ErrHalted is returned (wrapped) when a wave is unhealthy.
var ErrHalted = errors.New("rollout halted")

// ConfigurationID is the configuration of wave w of rollout id.
func ConfigurationID(id, wave string) string { return id + "-" + wave }

// Validate checks a plan before anything is created.
func (p *Plan) Validate() error {
	var errs []error
	if err := checkID(p.ID); err != nil {
		errs = append(errs, fmt.Errorf("rollout: id: %w", err))
	}
	if len(p.Waves) == 0 {
		errs = append(errs, errors.New("rollout: no waves"))
	}
	if p.Priority < 0 {
		errs = append(errs, errors.New("rollout: negative priority"))
	}
	seen := map[string]bool{}
	for i, w := range p.Waves {
		switch {
		case w.Name == "" || seen[w.Name]:
			errs = append(errs, fmt.Errorf("rollout: wave %d: want a unique name", i+1))
		case checkID(ConfigurationID(p.ID, w.Name)) != nil:
			errs = append(errs, fmt.Errorf("rollout: wave %s: %w", w.Name, checkID(ConfigurationID(p.ID, w.Name))))
		case w.Target == "":
			errs = append(errs, fmt.Errorf("rollout: wave %s: no target condition", w.Name))
		case w.MinSuccess < 0 || w.MinSuccess > 1:
			errs = append(errs, fmt.Errorf("rollout: wave %s: minSuccess %v: want 0 to 1", w.Name, w.MinSuccess))
		case w.MaxFailures < 0:
			errs = append(errs, fmt.Errorf("rollout: wave %s: negative maxFailures", w.Name))
		case w.Timeout <= 0:
			errs = append(errs, fmt.Errorf("rollout: wave %s: want a timeout", w.Name))
		}
		seen[w.Name] = true
	}
	var content struct {
		ModulesContent map[string]json.RawMessage `json:"modulesContent"`
	}
	if json.Unmarshal(p.Content, &content) != nil || content.ModulesContent == nil {
		errs = append(errs, errors.New(`rollout: content is not {"modulesContent": {...}}`))
	}
	return errors.Join(errs...)
}

// Run rolls p out: for each wave in turn, it creates (or, when it exists
// already with the same content, keeps) the wave's configuration and
// waits until the wave is healthy. It stops at the first unhealthy wave
// and returns the report with an error wrapping ErrHalted. progress, when
// not nil, is called with each status read.
func Run(ctx context.Context, hub Hub, p Plan, progress func(WaveStatus)) (*Report, error) {
	if err := p.Validate(); err != nil {
		return nil, err
	}
	poll := p.Poll
	if poll <= 0 {
		poll = 10 * time.Second
	}
	rep := &Report{Rollout: p.ID}
	for _, w := range p.Waves {
		rep.Waves = append(rep.Waves, WaveStatus{Wave: w.Name, Configuration: ConfigurationID(p.ID, w.Name), Verdict: "not started"})
	}
	for i, w := range p.Waves {
		if err := put(ctx, hub, p, i); err != nil {
			return rep, err
		}
		deadline := time.Now().Add(w.Timeout)
		for {
			st, err := status(ctx, hub, p, i, time.Now().After(deadline))
			if err != nil {
				return rep, err
			}
			rep.Waves[i] = st
			if progress != nil {
				progress(st)
			}
			if st.Verdict == "healthy" {
				break
			}
			if st.Verdict == "unhealthy" {
				rep.Halted = w.Name
				return rep, fmt.Errorf("%w at wave %s: %s", ErrHalted, w.Name, st.Reason)
			}
			select {
			case <-ctx.Done():
				return rep, context.Cause(ctx)
			case <-time.After(min(poll, time.Until(deadline)+time.Millisecond)):
			}
		}
	}
	return rep, nil
}

// put creates wave i's configuration unless it exists with the same
// content (a rollout run again goes on where it stopped). Earlier waves
// get higher priorities (Priority + the number of waves after them), so
// that a device stays under the first wave that took it and each device
// counts in one wave's metrics only.
func put(ctx context.Context, hub Hub, p Plan, i int) error {
	w := p.Waves[i]
	id := ConfigurationID(p.ID, w.Name)
	labels := maps.Clone(p.Labels)
	if labels == nil {
		labels = map[string]string{}
	}
	labels[LabelRollout], labels[LabelWave] = p.ID, w.Name
	cfg := hubservice.Configuration{
		ID: id, SchemaVersion: "2.0", Labels: labels, Content: p.Content,
		TargetCondition: w.Target, Priority: p.Priority + len(p.Waves) - 1 - i,
		Metrics: &hubservice.Metrics{Queries: metricQueries(id)},
	}
	old, err := hub.GetConfiguration(ctx, id)
	switch {
	case isNotFound(err):
		_, err = hub.PutConfiguration(ctx, cfg, "")
		return err
	case err != nil:
		return err
	}
	if !sameJSON(old.Content, p.Content) {
		return fmt.Errorf("rollout %s: configuration %s exists with other content; a deployment's content cannot change (use a new rollout id)", p.ID, id)
	}
	if old.TargetCondition == cfg.TargetCondition && old.Priority == cfg.Priority {
		return nil
	}
	cfg.Content = old.Content
	_, err = hub.PutConfiguration(ctx, cfg, old.ETag)
	return err
}

// status reads wave i's configuration and judges it; expired says the
// wave's time is up. Its devices are under it or under an earlier wave,
// so successes and failures are those of waves 0 to i.
func status(ctx context.Context, hub Hub, p Plan, i int, expired bool) (WaveStatus, error) {
	w := p.Waves[i]
	st := WaveStatus{Wave: w.Name, Configuration: ConfigurationID(p.ID, w.Name)}
	for j := i; j >= 0; j-- {
		cfg, err := hub.GetConfiguration(ctx, ConfigurationID(p.ID, p.Waves[j].Name))
		if isNotFound(err) {
			if j == i {
				st.Verdict = "not started"
				return st, nil
			}
			continue
		}
		if err != nil {
			return st, err
		}
		if j == i {
			st.Exists = true
			if cfg.SystemMetrics != nil {
				st.Targeted, st.Applied = cfg.SystemMetrics.Results["targetedCount"], cfg.SystemMetrics.Results["appliedCount"]
			}
		}
		if cfg.Metrics != nil {
			st.Succeeded += cfg.Metrics.Results[MetricSucceeded]
			st.Failed += cfg.Metrics.Results[MetricFailed]
		}
	}
	// All of them, but the failures the wave tolerates.
	need := st.Targeted - min(st.Failed, w.MaxFailures)
	if w.MinSuccess > 0 {
		need = int64(math.Ceil(w.MinSuccess * float64(st.Targeted)))
	}
	switch {
	case st.Failed > w.MaxFailures:
		st.Verdict, st.Reason = "unhealthy", fmt.Sprintf("%d of %d devices failed (at most %d allowed)", st.Failed, st.Targeted, w.MaxFailures)
	case st.Targeted == 0 && expired:
		st.Verdict, st.Reason = "unhealthy", "no device targeted"
	case st.Targeted > 0 && st.Succeeded >= need:
		st.Verdict = "healthy"
	case expired:
		st.Verdict, st.Reason = "unhealthy", fmt.Sprintf("%d of %d devices succeeded within %v (%d needed)", st.Succeeded, st.Targeted, w.Timeout, need)
	default:
		st.Verdict = "waiting"
	}
	return st, nil
}

// Status reads every wave of p as IoT Hub has it now, without judging
// time limits.
func Status(ctx context.Context, hub Hub, p Plan) (*Report, error) {
	rep := &Report{Rollout: p.ID}
	for i, w := range p.Waves {
		st, err := status(ctx, hub, p, i, false)
		if err != nil {
			return nil, err
		}
		if st.Verdict == "unhealthy" && rep.Halted == "" {
			rep.Halted = w.Name
		}
		rep.Waves = append(rep.Waves, st)
	}
	return rep, nil
}

// Rollback deletes the configurations of wave and of every wave after it,
// so that their devices fall back to the deployment below. The waves
// before stay.
func Rollback(ctx context.Context, hub Hub, p Plan, wave string) ([]string, error) {
	from := -1
	for i, w := range p.Waves {
		if w.Name == wave {
			from = i
		}
	}
	if from < 0 {
		return nil, fmt.Errorf("rollout %s has no wave %q", p.ID, wave)
	}
	var deleted []string
	for _, w := range p.Waves[from:] {
		id := ConfigurationID(p.ID, w.Name)
		cfg, err := hub.GetConfiguration(ctx, id)
		if isNotFound(err) {
			continue
		}
		if err != nil {
			return deleted, err
		}
		if cfg.Labels[LabelRollout] != p.ID {
			return deleted, fmt.Errorf("configuration %s is not rollout %s's (its %s label is %q): left alone", id, p.ID, LabelRollout, cfg.Labels[LabelRollout])
		}
		if err := hub.DeleteConfiguration(ctx, id, cfg.ETag); err != nil && !isNotFound(err) {
			return deleted, err
		}
		deleted = append(deleted, id)
	}
	return deleted, nil
}

func sameJSON(a, b json.RawMessage) bool {
	var x, y any
	if json.Unmarshal(a, &x) != nil || json.Unmarshal(b, &y) != nil {
		return false
	}
	ja, _ := json.Marshal(x)
	jb, _ := json.Marshal(y)
	return string(ja) == string(jb)
}

// checkID applies IoT Hub's rules for configuration IDs
// (docs/edge-protocol.md#iot-hub-service-api): up to 128 characters, lowercase, no spaces and none of
// & ^ [ ] { } \ | " < > /.
func checkID(id string) error {
	switch {
	case id == "":
		return errors.New("empty")
	case len(id) > 128:
		return fmt.Errorf("%q: longer than 128 characters", id)
	case strings.ToLower(id) != id:
		return fmt.Errorf("%q: want lowercase", id)
	case strings.ContainsAny(id, " &^[]{}\\|\"<>/") || strings.ContainsFunc(id, func(r rune) bool { return r < 0x21 || r > 0x7e }):
		return fmt.Errorf("%q: no spaces, control characters or & ^ [ ] { } \\ | \" < > /", id)
	}
	return nil
}

// isNotFound reports whether err is IoT Hub's 404.
func isNotFound(err error) bool {
	var se *hubservice.ServiceError
	return errors.As(err, &se) && se.HTTPStatus == 404
}
