package lab

import (
	"context"
	"encoding/json"
	"fmt"
	"time"
)

// configureRelay makes the sensor's broker a source of the relay through
// the module twin's desired properties, as an operator's deployment
// would, and waits for the relay to report them applied.
func (l *Lab) configureRelay(ctx context.Context, brokerURL string) error {
	start := time.Now()
	patch, _ := json.Marshal(map[string]any{
		"output": "telemetry",
		"sources": map[string]any{
			"sensor": map[string]any{
				"url":    brokerURL,
				"topics": map[string]any{"temperature": map[string]any{"filter": "lab/+/temperature", "qos": 1}},
			},
		},
	})
	version, err := l.hub.UpdateDesired(l.identity.DeviceID, ModuleID, patch)
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
// one) applied, and records the version.
func (l *Lab) waitApplied(ctx context.Context, version int64, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for {
		r, err := l.reportedConfiguration()
		if err != nil {
			return fmt.Errorf("twin: %w", err)
		}
		if r.Version >= version {
			if r.Status != "applied" {
				return fmt.Errorf("twin: the relay reported version %d %s: %s", r.Version, r.Status, r.Reason)
			}
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("twin: the relay did not report desired version %d within %v; see %s", version, timeout, l.path("logs", "relay.log"))
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// reported is the relay's reported "configuration" (module/twin).
type reported struct {
	Version        int64  `json:"version"`
	Status         string `json:"status"`
	Reason         string `json:"reason"`
	AppliedVersion int64  `json:"appliedVersion"`
}

func (l *Lab) reportedConfiguration() (reported, error) {
	tw, err := l.hub.Twin(l.identity.DeviceID, ModuleID)
	if err != nil {
		return reported{}, err
	}
	var r struct {
		Configuration reported `json:"configuration"`
	}
	json.Unmarshal(tw.Reported, &r)
	return r.Configuration, nil
}
