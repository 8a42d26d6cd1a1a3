package main

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/edgetpm/edgetpm/internal/testharness/until"
)

// Whoever writes the module twin cannot make the relay read a device or
// a FIFO as a CA file, nor send its identity to a broker: the CA file
// fails that source alone, with the reason in its stats; a password from
// the relay's identity, or one over plain TCP, is rejected with the
// reason, the last good configuration stays, and later versions apply.
func TestHostileTwin(t *testing.T) {
	e := startEdge(t)
	ctx := t.Context()
	until.True(t, "the first report", func() bool { return reported(t, e.hub) != nil })
	update := func(patch string) {
		t.Helper()
		if _, err := e.hub.UpdateDesired("edge1", "relay", json.RawMessage(patch)); err != nil {
			t.Fatal(err)
		}
	}
	status := func(version float64, status string) func() bool {
		return func() bool { c := reported(t, e.hub); return c["version"] == version && c["status"] == status }
	}

	update(`{"output":"plant","sources":{"zero":{"url":"ssl://127.0.0.1:1","caFile":"/dev/zero","topics":{"t":{"filter":"a/#"}}}}}`)
	until.True(t, "version 2 applied", status(2, "applied"))
	until.True(t, "the CA file refused", func() bool {
		_, resp, err := e.hub.InvokeMethod(ctx, "edge1", "relay", "stats", nil, 5*time.Second)
		return err == nil && strings.Contains(string(resp), "not a regular file")
	})

	update(`{"sources":{"leak":{"url":"tcp://127.0.0.1:1883","username":"x","passwordEnv":"EdgeHubConnectionString","topics":{"t":{"filter":"a/#"}}}}}`)
	until.True(t, "version 3 rejected", status(3, "rejected"))
	c := reported(t, e.hub)
	reason, _ := c["reason"].(string)
	if !strings.Contains(reason, "sources.leak.passwordEnv") || !strings.Contains(reason, "plain tcp://") {
		t.Errorf("reason = %q, want the variable and the plain TCP refused", reason)
	}
	if eff, _ := c["effective"].(map[string]any); eff["output"] != "plant" || c["appliedVersion"] != 2.0 {
		t.Errorf("after a rejected version: effective %v from %v, want version 2's", eff, c["appliedVersion"])
	}

	update(`{"output":"after","sources":{"zero":null,"leak":null}}`)
	until.True(t, "version 4 applied", status(4, "applied"))
}
