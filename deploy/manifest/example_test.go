package manifest_test

import (
	"errors"
	"fmt"

	"github.com/edgetpm/edgetpm/deploy/manifest"
)

func ExampleParseRoute() {
	r, err := manifest.ParseRoute(`FROM /messages/modules/plc/outputs/* WHERE temp > 30 INTO BrokeredEndpoint("/modules/relay/inputs/readings")`)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(r.Source)
	fmt.Println(r.Condition)
	fmt.Println(r.Sink)
	// Output:
	// /messages/modules/plc/outputs/*
	// temp > 30
	// BrokeredEndpoint("/modules/relay/inputs/readings")
}

func ExampleValidate() {
	err := manifest.Validate([]byte(`{"modulesContent": {
	  "$edgeAgent": {},
	  "$edgeHub": {"properties.desired.routes.toHub": "FROM /messages/* INTO upstream"},
	  "relay": {"properties.desired.sources": ["press"]}}}`))
	var problems interface{ Unwrap() []error }
	if errors.As(err, &problems) {
		for _, e := range problems.Unwrap() {
			var p *manifest.Error
			if errors.As(e, &p) {
				fmt.Printf("%s\n  %s\n", p.Path, p.Msg)
			}
		}
	}
	// Output:
	// $.modulesContent['$edgeHub']['properties.desired.routes.toHub']
	//   sink "upstream": want $upstream or BrokeredEndpoint("/modules/<m>/inputs/<i>")
	// $.modulesContent.relay['properties.desired.sources']
	//   twins hold no arrays; use an object keyed by name
}
