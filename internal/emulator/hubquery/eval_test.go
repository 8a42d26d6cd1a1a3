package hubquery

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"
)

// twinsJSON holds device and module twins as the hub stores them.
const twinsJSON = `{
 "edge1": {"deviceId": "edge1", "tags": {"environment": "prod", "site": "plant1", "gateway": true,
           "owner": "O'Brien", "odd-name": "x", "location": {"region": "eu", "floor": 3}},
           "properties": {"desired": {}, "reported": {}}},
 "edge7": {"deviceId": "edge-7", "tags": {"environment": "prod", "site": "plant2", "gateway": false, "retired": null}},
 "dev1":  {"deviceId": "dev1", "tags": {"environment": "dev"}},
 "agent1": {"deviceId": "edge1", "moduleId": "$edgeAgent",
            "properties": {"reported": {"lastDesiredStatus": {"code": 200, "description": ""}}}},
 "agent7": {"deviceId": "edge-7", "moduleId": "$edgeAgent",
            "properties": {"reported": {"lastDesiredStatus": {"code": 400}}}},
 "hub1":   {"deviceId": "edge1", "moduleId": "$edgeHub",
            "properties": {"reported": {"lastDesiredStatus": {"code": 200}}}}
}`

func loadTwins(t testing.TB) map[string]map[string]any {
	t.Helper()
	var twins map[string]map[string]any
	if err := json.Unmarshal([]byte(twinsJSON), &twins); err != nil {
		t.Fatal(err)
	}
	return twins
}

var matchTests = []struct {
	cond string
	want []string // names of the matching twins, sorted
}{
	// docs/edge-protocol.md#iot-hub-service-api.
	{"tags.environment='prod' AND tags.site='plant1'", []string{"edge1"}},
	{"moduleId='$edgeAgent' AND properties.reported.lastDesiredStatus.code = 200", []string{"agent1"}},
	// The package doc example.
	{"tags.environment='prod' AND (tags.site='plant1' OR deviceId='edge-7')", []string{"edge1", "edge7"}},

	{"tags.environment = 'prod'", []string{"edge1", "edge7"}},
	{"deviceId = 'edge1'", []string{"agent1", "edge1", "hub1"}},
	{"moduleId = '$edgeAgent'", []string{"agent1", "agent7"}},
	{"properties.reported.lastDesiredStatus.code = 200", []string{"agent1", "hub1"}},
	{"properties.reported.lastDesiredStatus.code >= 300", []string{"agent7"}},
	{"properties.reported.lastDesiredStatus.code != 200", []string{"agent7"}},

	// AND binds tighter than OR; parentheses override.
	{"tags.environment='dev' AND tags.site='plant1' OR deviceId='edge-7'", []string{"agent7", "edge7"}},
	{"deviceId='edge-7' OR tags.environment='dev' AND tags.site='none'", []string{"agent7", "edge7"}},
	{"(deviceId='edge-7' OR tags.environment='dev') AND tags.site='none'", nil},
	{"(tags.environment='dev' OR deviceId='edge-7') AND tags.site='plant2'", []string{"edge7"}},
	{"deviceId='dev1' OR deviceId='edge1' AND moduleId='$edgeHub'", []string{"dev1", "hub1"}},

	// Nested tags and numbers.
	{"tags.location.region = 'eu'", []string{"edge1"}},
	{"tags.location.floor = 3", []string{"edge1"}},
	{"tags.location.floor = 3.0", []string{"edge1"}},
	{"tags.location.floor = 0.3e1", []string{"edge1"}},
	{"tags.location.floor > 3", nil},
	{"tags.location.floor >= 3", []string{"edge1"}},
	{"tags.location.floor < 3.5", []string{"edge1"}},
	{"tags.location.floor <= 2", nil},
	{"tags.location.floor > -1", []string{"edge1"}},
	{"tags.location = 3", nil},          // an object is no number
	{"tags.location.floor.x = 3", nil},  // a number has no fields
	{"tags.location.floor = '3'", nil},  // mismatched types
	{"tags.location.floor != '3'", nil}, // mismatched types, even for !=
	{"deviceId = 1", nil},
	{"tags.gateway = 'true'", nil},

	// Strings order byte-wise: '-' < '1' < 'v'.
	{"deviceId < 'e'", []string{"dev1"}},
	{"deviceId > 'edge-7'", []string{"agent1", "edge1", "hub1"}},
	{"deviceId >= 'edge-7'", []string{"agent1", "agent7", "edge1", "edge7", "hub1"}},
	{"deviceId <= 'edge-7' AND moduleId = '$edgeAgent'", []string{"agent7"}},

	// Missing paths make every comparison false, != included; NOT negates.
	{"tags.site != 'plant1'", []string{"edge7"}},
	{"tags.site <> 'plant1'", []string{"edge7"}},
	{"NOT tags.site = 'plant1'", []string{"agent1", "agent7", "dev1", "edge7", "hub1"}},
	{"NOT NOT tags.site = 'plant1'", []string{"edge1"}},
	{"NOT (tags.site = 'plant1' OR tags.environment = 'dev')", []string{"agent1", "agent7", "edge7", "hub1"}},
	{"NOT tags.site = 'plant1' AND tags.environment = 'prod'", []string{"edge7"}},
	{"tags.nothing = null", nil},
	{"IS_DEFINED(tags.site)", []string{"edge1", "edge7"}},
	{"NOT is_defined(moduleId)", []string{"dev1", "edge1", "edge7"}},

	// IN lists.
	{"deviceId IN ['dev1', 'edge-7']", []string{"agent7", "dev1", "edge7"}},
	{"moduleId in ['$edgeHub']", []string{"hub1"}},
	{"properties.reported.lastDesiredStatus.code IN [400, 500]", []string{"agent7"}},
	{"properties.reported.lastDesiredStatus.code IN ['200']", nil},
	{"tags.missing IN ['a', null]", nil},

	// null and booleans.
	{"tags.retired = null", []string{"edge7"}},
	{"tags.retired != null", nil},
	{"tags.gateway != null", []string{"edge1", "edge7"}},
	{"tags.retired IN [null]", []string{"edge7"}},
	{"IS_DEFINED(tags.retired)", []string{"edge7"}},
	{"tags.environment = null", nil},
	{"tags.gateway = true", []string{"edge1"}},
	{"tags.gateway != true", []string{"edge7"}},
	{"tags.gateway = FALSE", []string{"edge7"}},
	{"tags.gateway < true", nil},

	// Quoting and odd names.
	{"tags.owner = 'O''Brien'", []string{"edge1"}},
	{"tags.[odd-name] = 'x'", []string{"edge1"}},
	{"tags.[odd-name] = 'X'", nil},     // values are case-sensitive
	{"TAGS.environment = 'prod'", nil}, // and so are property names
	{"tags.environment = 'prod' and not deviceId = 'edge1'", []string{"edge7"}},
}

func TestMatch(t *testing.T) {
	twins := loadTwins(t)
	names := make([]string, 0, len(twins))
	for name := range twins {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, tt := range matchTests {
		c, err := ParseCondition(tt.cond)
		if err != nil {
			t.Errorf("ParseCondition(%q) = %v", tt.cond, err)
			continue
		}
		var got []string
		for _, name := range names {
			if c.Match(twins[name]) {
				got = append(got, name)
			}
		}
		if !slices.Equal(got, tt.want) {
			t.Errorf("%q matches %q, want %q", tt.cond, got, tt.want)
		}
	}
}

func TestMatchNumberTypes(t *testing.T) {
	c, err := ParseCondition("n = 200")
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range []any{200.0, float32(200), 200, int32(200), int64(200), uint(200), uint32(200), uint64(200), json.Number("200"), json.Number("2e2")} {
		if !c.Match(map[string]any{"n": v}) {
			t.Errorf("n = 200 does not match %T %v", v, v)
		}
	}
	for _, v := range []any{201, "200", json.Number("x"), true, nil, []any{200.0}} {
		if c.Match(map[string]any{"n": v}) {
			t.Errorf("n = 200 matches %T %v", v, v)
		}
	}
}

func TestMatchNil(t *testing.T) {
	var c *Condition
	if !c.Match(map[string]any{}) {
		t.Error("nil Condition does not match")
	}
	c, err := ParseCondition("NOT a = 1")
	if err != nil {
		t.Fatal(err)
	}
	if !c.Match(nil) {
		t.Error("NOT a = 1 does not match a nil twin")
	}
}

func TestCount(t *testing.T) {
	twins := loadTwins(t)
	devices := []map[string]any{twins["edge1"], twins["edge7"], twins["dev1"]}
	modules := []map[string]any{twins["agent1"], twins["agent7"], twins["hub1"]}
	tests := []struct {
		query string
		twins []map[string]any
		want  int
	}{
		{"SELECT deviceId FROM devices.modules WHERE moduleId='$edgeAgent' AND properties.reported.lastDesiredStatus.code = 200", modules, 1},
		{"SELECT deviceId FROM devices.modules WHERE moduleId='$edgeAgent'", modules, 2},
		{"SELECT * FROM devices.modules", modules, 3},
		{"SELECT * FROM devices", devices, 3},
		{"SELECT * FROM devices", nil, 0},
		{"SELECT deviceId FROM devices WHERE tags.environment='prod'", devices, 2},
		{"SELECT deviceId FROM devices WHERE tags.environment='prod' AND tags.site='plant1'", devices, 1},
		{"SELECT deviceId FROM devices WHERE tags.environment='test'", devices, 0},
	}
	for _, tt := range tests {
		q, err := ParseQuery(tt.query)
		if err != nil {
			t.Errorf("ParseQuery(%q) = %v", tt.query, err)
			continue
		}
		if got := q.Count(tt.twins); got != tt.want {
			t.Errorf("ParseQuery(%q).Count = %d, want %d", tt.query, got, tt.want)
		}
	}
}

// configurations.[[id]].status, the clause IoT Hub's docs add to a
// deployment's metric queries to count only the devices it applies to.
func TestConfigurationStatus(t *testing.T) {
	q, err := ParseQuery("SELECT deviceId FROM devices.modules WHERE moduleId='$edgeAgent' AND configurations.[[relay-2-canary]].status='Applied' AND properties.reported.lastDesiredStatus.code = 200")
	if err != nil {
		t.Fatal(err)
	}
	twin := func(status string, code float64) map[string]any {
		return map[string]any{"moduleId": "$edgeAgent",
			"configurations": map[string]any{"relay-2-canary": map[string]any{"status": status}},
			"properties":     map[string]any{"reported": map[string]any{"lastDesiredStatus": map[string]any{"code": code}}}}
	}
	if n := q.Count([]map[string]any{twin("Applied", 200), twin("Targeted", 200), twin("Applied", 500), {"moduleId": "$edgeAgent"}}); n != 1 {
		t.Errorf("Count = %d, want 1", n)
	}
	if _, err := ParseCondition("configurations.[[x].status='Applied'"); err == nil || !strings.Contains(err.Error(), `missing "]]"`) {
		t.Errorf("unclosed [[: %v", err)
	}
}
