package twin

import (
	"strings"
	"testing"
	"time"
)

// Priorities are set per source and overridden per topic, 0 the highest
// as on edgeHub's routes; a topic and source with none rank lowest.
func TestParseDrain(t *testing.T) {
	c, err := Parse([]byte(`{"upstream":{"maxBytesPerSecond":20000,"timeToLiveSecs":{"0":86400,"5":60,"default":7200}},
		"sources":{"press":{"url":"tcp://h:1","priority":5,"topics":{"alarm":{"filter":"a/#","priority":0},"data":{"filter":"d/#"}}},
		"oven":{"url":"tcp://h:2","topics":{"all":{"filter":"#"}}}}}`))
	if err != nil {
		t.Fatal(err)
	}
	if c.Upstream.MaxBytesPerSecond != 20000 {
		t.Errorf("maxBytesPerSecond = %d, want 20000", c.Upstream.MaxBytesPerSecond)
	}
	oven, press := c.Sources[0], c.Sources[1]
	for _, tc := range []struct {
		s    Source
		t    int
		want uint8
	}{
		{press, 0, 10}, // priority 0: the highest rank
		{press, 1, 5},  // the source's priority 5
		{oven, 0, 0},   // none: the lowest
	} {
		if got := tc.s.Rank(tc.s.Topics[tc.t]); got != tc.want {
			t.Errorf("%s.%s: Rank = %d, want %d", tc.s.Name, tc.s.Topics[tc.t].Name, got, tc.want)
		}
	}
	for _, tc := range []struct {
		rank uint8
		want time.Duration
	}{{10, 24 * time.Hour}, {5, time.Minute}, {0, 2 * time.Hour}, {9, 0}} {
		if got := c.Upstream.TTL(tc.rank); got != tc.want {
			t.Errorf("TTL(rank %d) = %v, want %v", tc.rank, got, tc.want)
		}
	}
	if d := Defaults(); d.Upstream.MaxBytesPerSecond != 0 || d.Upstream.TTL(0) != 0 {
		t.Errorf("defaults: %+v, want no cap and no TTL", d.Upstream)
	}
	for _, tc := range []struct{ doc, want string }{
		{`{"upstream":{"maxBytesPerSecond":-1}}`, "upstream.maxBytesPerSecond"},
		{`{"upstream":{"maxBytesPerSecond":50}}`, "upstream.maxBytesPerSecond"},
		{`{"upstream":{"timeToLiveSecs":{"10":60}}}`, "upstream.timeToLiveSecs.10"},
		{`{"upstream":{"timeToLiveSecs":{"low":60}}}`, "upstream.timeToLiveSecs.low"},
		{`{"upstream":{"timeToLiveSecs":{"1":-5}}}`, "upstream.timeToLiveSecs.1"},
		{`{"upstream":{"burst":1}}`, "unknown field"},
		{src(`"url":"tcp://h:1","priority":10`), "sources.a.priority"},
		{src(`"url":"tcp://h:1","priority":-1`), "sources.a.priority"},
		{`{"sources":{"a":{"url":"tcp://h:1","topics":{"t":{"filter":"x","priority":12}}}}}`, "sources.a.topics.t.priority"},
	} {
		if _, err := Parse([]byte(tc.doc)); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Parse(%s) = %v, want an error about %s", tc.doc, err, tc.want)
		}
	}
}
