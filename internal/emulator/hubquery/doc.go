// Package hubquery parses and evaluates the subset of the IoT Hub query
// language that automatic deployments use (docs/edge-protocol.md#iot-hub-service-api): the
// targetCondition of a configuration and the SELECT ... FROM devices or
// devices.modules queries of its metrics. The IoT Hub emulator calls it to
// pick target devices and to count metric results; twins are decoded JSON
// (map[string]any) of the form
//
//	{"deviceId": "edge1", "moduleId": "$edgeAgent", "tags": {...},
//	 "properties": {"desired": {...}, "reported": {...}}}
//
// Grammar (keywords are case-insensitive, property names are not):
//
//	condition  := and ("OR" and)*
//	and        := not ("AND" not)*
//	not        := "NOT" not | "(" condition ")" | comparison
//	comparison := path op literal
//	            | path "IN" "[" literal ("," literal)* "]"
//	            | "IS_DEFINED" "(" path ")"
//	op         := "=" | "!=" | "<>" | "<" | "<=" | ">" | ">="
//	path       := name ("." (name | "[" any text but "]" "]"))*
//	name       := [A-Za-z_$][A-Za-z0-9_$]*
//	literal    := 'single-quoted' ('' is a quote) | number | true | false | null
//	query      := "SELECT" ("*" | path ("," path)*) "FROM" ("devices" | "devices.modules")
//	              ["WHERE" condition]
//
// Double-quoted strings are rejected: the IoT Hub docs ask for single quotes
// in a targetCondition.
//
// A comparison is false when its path does not resolve or when the value and
// the literal have different types (numbers compare as float64, strings
// byte-wise), so both tags.x = 'a' and tags.x != 'a' are false on a twin
// without tags.x. NOT simply negates, so NOT tags.x = 'a' is true there.
// IS_DEFINED is true for any value, JSON null included.
//
// Parsed conditions and queries are immutable and safe for concurrent use.
package hubquery
