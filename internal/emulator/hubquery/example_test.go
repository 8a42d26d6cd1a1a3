package hubquery_test

import (
	"encoding/json"
	"fmt"

	"github.com/edgetpm/edgetpm/internal/emulator/hubquery"
)

// A deployment's targetCondition picks devices by tags; its metric query
// counts module twins whose edgeAgent applied the deployment.
func Example() {
	var twins []map[string]any
	err := json.Unmarshal([]byte(`[
		{"deviceId": "edge1", "tags": {"environment": "prod", "site": "plant1"}},
		{"deviceId": "edge2", "tags": {"environment": "prod", "site": "plant2"}},
		{"deviceId": "edge1", "moduleId": "$edgeAgent",
		 "properties": {"reported": {"lastDesiredStatus": {"code": 200}}}}
	]`), &twins)
	if err != nil {
		panic(err)
	}

	target, err := hubquery.ParseCondition("tags.environment='prod' AND tags.site='plant1'")
	if err != nil {
		panic(err)
	}
	for _, twin := range twins[:2] {
		fmt.Println(twin["deviceId"], target.Match(twin))
	}

	q, err := hubquery.ParseQuery("SELECT deviceId FROM devices.modules WHERE moduleId='$edgeAgent' AND properties.reported.lastDesiredStatus.code = 200")
	if err != nil {
		panic(err)
	}
	fmt.Println(q.Select, q.From, q.Count(twins[2:]))

	_, err = hubquery.ParseCondition(`tags.environment="prod"`)
	fmt.Println(err)
	// Output:
	// edge1 true
	// edge2 false
	// [deviceId] devices.modules 1
	// hubquery: offset 17: double-quoted string: use single quotes ('...')
}
