package lab

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/edgetpm/edgetpm/module/twin"
)

// twinService is what the twin helpers need of IoT Hub's service API
// (internal/hubservice).
type twinService interface {
	Twin(ctx context.Context, deviceID, moduleID string) (json.RawMessage, error)
	UpdateTwinIf(ctx context.Context, deviceID, moduleID string, patch json.RawMessage, ifMatch string) (json.RawMessage, error)
}

// twinReader is the reading half of twinService.
type twinReader interface {
	Twin(ctx context.Context, deviceID, moduleID string) (json.RawMessage, error)
}

// SetDesired merges patch into the desired properties of a module twin
// through the service API, as an operator does in IoT Hub, and returns
// the desired version it made. ifMatch, when not "" or "*", is the twin
// ETag the patch applies to.
func SetDesired(ctx context.Context, c twinService, device, module string, patch map[string]any, ifMatch string) (int64, error) {
	body, err := json.Marshal(map[string]any{"properties": map[string]any{"desired": patch}})
	if err != nil {
		return 0, fmt.Errorf("desired properties of %s/%s: %w", device, module, err)
	}
	tw, err := c.UpdateTwinIf(ctx, device, module, body, ifMatch)
	if err != nil {
		return 0, err
	}
	var set struct {
		Properties struct {
			Desired struct {
				Version int64 `json:"$version"`
			} `json:"desired"`
		} `json:"properties"`
	}
	if err := json.Unmarshal(tw, &set); err != nil {
		return 0, fmt.Errorf("twin of %s/%s: %w", device, module, err)
	}
	return set.Properties.Desired.Version, nil
}

// Reported returns what a module's twin reconciler (module/twin) reports
// now; ok is false while it has reported nothing.
func Reported(ctx context.Context, c twinReader, device, module string) (r twin.Reported, ok bool, err error) {
	tw, err := c.Twin(ctx, device, module)
	if err != nil {
		return twin.Reported{}, false, err
	}
	var doc struct {
		Properties struct {
			Reported twin.ReportedProperties `json:"reported"`
		} `json:"properties"`
	}
	if err := json.Unmarshal(tw, &doc); err != nil {
		return twin.Reported{}, false, fmt.Errorf("reported properties of %s/%s: %w", device, module, err)
	}
	if doc.Properties.Reported.Configuration == nil {
		return twin.Reported{}, false, nil
	}
	return *doc.Properties.Reported.Configuration, true, nil
}

// ErrNoReport is returned by WaitReported when the module did not report
// the version in time.
var ErrNoReport = errors.New("no report of the desired version")

// reportPoll is how often WaitReported reads the twin.
const reportPoll = 100 * time.Millisecond

// WaitReported waits until the module reports desired version, or a later
// one, applied or rejected, and returns the report. When ctx ends first,
// the error wraps ErrNoReport.
func WaitReported(ctx context.Context, c twinReader, device, module string, version int64) (twin.Reported, error) {
	for {
		r, ok, err := Reported(ctx, c, device, module)
		if err != nil && ctx.Err() == nil {
			return r, err
		}
		if ok && r.Version >= version {
			return r, nil
		}
		select {
		case <-ctx.Done():
			return r, fmt.Errorf("%s/%s: %w %d", device, module, ErrNoReport, version)
		case <-time.After(reportPoll):
		}
	}
}

// configureRelay makes the sensor's broker a source of the relay through
// the module twin's desired properties, as an operator's deployment
// would, and waits for the relay to report them applied.
func (l *Lab) configureRelay(ctx context.Context, brokerURL string) error {
	start := time.Now()
	version, err := SetDesired(ctx, l.service, l.identity.DeviceID, ModuleID, map[string]any{
		"output": "telemetry",
		"sources": map[string]any{
			"sensor": map[string]any{
				"url":    brokerURL,
				"topics": map[string]any{"temperature": map[string]any{"filter": "lab/+/temperature", "qos": 1}},
			},
		},
	}, "")
	if err != nil {
		return fmt.Errorf("twin: %w", err)
	}
	if err := l.waitApplied(ctx, version, 30*time.Second); err != nil {
		return err
	}
	l.printf("twin", "desired version %d (source sensor: %s) applied by the relay in %v", version, brokerURL, since(start))
	return nil
}

// waitApplied waits until the relay reports desired version (or a later
// one) applied.
func (l *Lab) waitApplied(ctx context.Context, version int64, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	r, err := WaitReported(ctx, l.service, l.identity.DeviceID, ModuleID, version)
	switch {
	case errors.Is(err, ErrNoReport):
		return fmt.Errorf("twin: the relay did not report desired version %d within %v; see %s", version, timeout, l.path("logs", "relay.log"))
	case err != nil:
		return fmt.Errorf("twin: %w", err)
	case r.Status != twin.StatusApplied:
		return fmt.Errorf("twin: the relay reported version %d %s: %s", r.Version, r.Status, r.Reason)
	}
	return nil
}
