package manifest

import (
	"bytes"
	"cmp"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"
)

// validDoc is a standard deployment that breaks no rule of
// docs/edge-protocol.md#deployments.
const validDoc = `{"modulesContent": {
  "$edgeAgent": {"properties.desired": {
    "schemaVersion": "1.1",
    "runtime": {"type": "docker", "settings": {"minDockerVersion": "v1.25",
      "registryCredentials": {"myacr": {"username": "u", "password": "p", "address": "myacr.azurecr.io"}}}},
    "systemModules": {
      "edgeAgent": {"type": "docker", "settings": {"image": "mcr.microsoft.com/azureiotedge-agent:1.5", "createOptions": "{}"},
        "env": {"UpstreamProtocol": {"value": "AmqpWs"}}},
      "edgeHub": {"type": "docker", "status": "running", "restartPolicy": "always", "startupOrder": 0,
        "settings": {"image": "mcr.microsoft.com/azureiotedge-hub:1.5", "createOptions": "{\"HostConfig\":{}}"}}
    },
    "modules": {
      "relay": {"version": "1.0", "type": "docker", "status": "running", "restartPolicy": "always",
        "imagePullPolicy": "on-create", "startupOrder": 1,
        "env": {"THRESHOLD": {"value": "80"}, "N": {"value": 3}, "ON": {"value": true}},
        "settings": {"image": "ghcr.io/edgetpm/edge-relay:0.1.0",
          "createOptions": "{\"HostConfig\":{\"Binds\":",
          "createOptions01": "[\"/var/lib/edge-relay:/data\"]}}"}}
    }
  }},
  "$edgeHub": {"properties.desired": {
    "schemaVersion": "1.2",
    "routes": {
      "sensorToRelay": "FROM /messages/modules/plc/outputs/temperature WHERE $body.t > 30 INTO BrokeredEndpoint(\"/modules/relay/inputs/readings\")",
      "relayToHub": {"route": "FROM /messages/modules/relay/outputs/* INTO $upstream", "priority": 0, "timeToLiveSecs": 86400}
    },
    "storeAndForwardConfiguration": {"timeToLiveSecs": 7200}
  }},
  "relay": {"properties.desired": {"logLevel": "info", "sources": {"press": {"url": "tcp://p:1883"}}}}
}}`

// validLayered is the layered deployment example of docs/edge-protocol.md#deployments.
const validLayered = `{"modulesContent": {
  "$edgeAgent": {
    "properties.desired.modules.filtermodule": {
      "settings": {"image": "myacr.azurecr.io/filtermodule:1.0.1", "createOptions": "{}"},
      "type": "docker", "status": "running", "restartPolicy": "always", "version": "1.0"},
    "properties.desired.runtime.settings.registryCredentials.myacr": {"address": "myacr.azurecr.io", "username": "u", "password": "p"}
  },
  "$edgeHub": {"properties.desired.routes.filterToHub": "FROM /messages/modules/filtermodule/outputs/* INTO $upstream"},
  "filtermodule": {"properties.desired.layeredProperties": {"StopAfterCount": 1000}}
}}`

const (
	mcP    = "$.modulesContent"
	agentP = mcP + "['$edgeAgent']['properties.desired']"
	hubP   = mcP + "['$edgeHub']['properties.desired']"
	relayP = agentP + ".modules.relay"
	twinP  = mcP + ".relay['properties.desired']"
)

// at returns the object at keys below m.
func at(m map[string]any, keys ...string) map[string]any {
	for _, k := range keys {
		m = m[k].(map[string]any)
	}
	return m
}

func agent(d map[string]any) map[string]any {
	return at(d, "modulesContent", "$edgeAgent", "properties.desired")
}

func hub(d map[string]any) map[string]any {
	return at(d, "modulesContent", "$edgeHub", "properties.desired")
}

func relay(d map[string]any) map[string]any { return at(agent(d), "modules", "relay") }

func routes(d map[string]any) map[string]any { return at(hub(d), "routes") }

func relayTwin(d map[string]any) map[string]any {
	return at(d, "modulesContent", "relay", "properties.desired")
}

func decodeT(t testing.TB, s string) map[string]any {
	t.Helper()
	v, err := decode([]byte(s))
	if err != nil {
		t.Fatal(err)
	}
	return v.(map[string]any)
}

func num(s string) json.Number { return json.Number(s) }

type validateCase struct {
	name string
	doc  string                 // validDoc when empty
	edit func(d map[string]any) // applied to doc
	want []Error
}

func (tc validateCase) input(t testing.TB) []byte {
	doc := cmp.Or(tc.doc, validDoc)
	if tc.edit == nil {
		return []byte(doc)
	}
	d := decodeT(t, doc)
	tc.edit(d)
	b, err := json.Marshal(d)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

var validateCases = []validateCase{
	{name: "valid"},
	{name: "valid layered", doc: validLayered},
	{name: "valid configuration", doc: `{"id": "relay-v1", "priority": 10, "content": ` + validDoc + `}`},
	{name: "valid layered module desired", doc: `{"modulesContent": {"$edgeAgent": {}, "relay": {"properties.desired": {"logLevel": "debug"}}}}`},
	// 100 chunks are more than a twin holds.
	{name: "chunks 99", edit: func(d map[string]any) {
		s := at(relay(d), "settings")
		s["createOptions"] = "{" + strings.Repeat(" ", 500)
		for i := 1; i < 99; i++ {
			s[chunkKey(i)] = strings.Repeat(" ", 512)
		}
		s[chunkKey(99)] = "}"
	}, want: []Error{{agentP, "53600 bytes serialized; a twin's desired properties hold at most 32768"}}},

	{name: "not JSON", doc: `{"modulesContent":`, want: []Error{{"$", "not JSON: unexpected EOF"}}},
	{name: "trailing data", doc: `{} {}`, want: []Error{{"$", "not JSON: data after the top-level value"}}},
	{name: "not an object", doc: `[]`, want: []Error{{"$", "must be an object"}}},
	{name: "no modulesContent", doc: `{"id": "x"}`, want: []Error{{"$.modulesContent", "required"}}},
	{name: "configuration content", doc: `{"content": {"modulesContent": {"$edgeAgent": {}, "$edgeHub": {"properties.desired.routes.r": "FROM /* INTO x"}}}}`,
		want: []Error{{"$.content.modulesContent['$edgeHub']['properties.desired.routes.r']", `sink "x": want $upstream or BrokeredEndpoint("/modules/<m>/inputs/<i>")`}}},
	{name: "no $edgeAgent", edit: func(d map[string]any) { delete(at(d, "modulesContent"), "$edgeAgent") },
		want: []Error{{mcP + "['$edgeAgent']", "required"}}},
	{name: "no $edgeHub", edit: func(d map[string]any) { delete(at(d, "modulesContent"), "$edgeHub") },
		want: []Error{{mcP + "['$edgeHub']", "required"}}},
	{name: "no desired", edit: func(d map[string]any) { at(d, "modulesContent")["$edgeHub"] = map[string]any{} },
		want: []Error{{mcP + "['$edgeHub']['properties.desired']", "required"}}},
	{name: "unknown section key", edit: func(d map[string]any) { at(d, "modulesContent", "relay")["properties.reported"] = map[string]any{} },
		want: []Error{{mcP + ".relay['properties.reported']", `unknown key; want "properties.desired"`}}},
	{name: "bad section name", edit: func(d map[string]any) {
		at(d, "modulesContent")["re/lay"] = map[string]any{"properties.desired": map[string]any{}}
	},
		want: []Error{{mcP + "['re/lay']", "module names must match ^[a-zA-Z0-9_-]+$"}}},

	{name: "agent schema", edit: func(d map[string]any) { agent(d)["schemaVersion"] = "1.2" },
		want: []Error{{agentP + ".schemaVersion", `"1.2" is not one of 1.0, 1.1`}}},
	{name: "runtime type", edit: func(d map[string]any) { at(agent(d), "runtime")["type"] = "moby" },
		want: []Error{{agentP + ".runtime.type", `"moby" is not one of docker`}}},
	{name: "runtime settings", edit: func(d map[string]any) { delete(at(agent(d), "runtime"), "settings") },
		want: []Error{{agentP + ".runtime.settings", "required"}}},
	{name: "registry credential", edit: func(d map[string]any) {
		delete(at(agent(d), "runtime", "settings", "registryCredentials", "myacr"), "address")
	},
		want: []Error{{agentP + ".runtime.settings.registryCredentials.myacr.address", "required"}}},
	{name: "no systemModules", edit: func(d map[string]any) { delete(agent(d), "systemModules") },
		want: []Error{{agentP + ".systemModules", "required"}}},
	{name: "no edgeHub module", edit: func(d map[string]any) { delete(at(agent(d), "systemModules"), "edgeHub") },
		want: []Error{{agentP + ".systemModules.edgeHub", "required"}}},
	{name: "extra system module", edit: func(d map[string]any) { at(agent(d), "systemModules")["relay"] = relay(d) },
		want: []Error{{agentP + ".systemModules.relay", "unknown system module; want edgeAgent and edgeHub"}}},
	{name: "edgeAgent status", edit: func(d map[string]any) { at(agent(d), "systemModules", "edgeAgent")["startupOrder"] = num("0") },
		want: []Error{{agentP + ".systemModules.edgeAgent.startupOrder", "edgeAgent has no startupOrder"}}},
	{name: "edgeHub image", edit: func(d map[string]any) { delete(at(agent(d), "systemModules", "edgeHub", "settings"), "image") },
		want: []Error{{agentP + ".systemModules.edgeHub.settings.image", "required"}}},

	{name: "module name", edit: func(d map[string]any) { at(agent(d), "modules")["re+lay"] = relay(d) },
		want: []Error{{agentP + ".modules['re+lay']", "module names must match ^[a-zA-Z0-9_-]+$"}}},
	{name: "module type", edit: func(d map[string]any) { relay(d)["type"] = "rkt" },
		want: []Error{{relayP + ".type", `"rkt" is not one of docker`}}},
	{name: "module no type", edit: func(d map[string]any) { delete(relay(d), "type") },
		want: []Error{{relayP + ".type", "required"}}},
	{name: "status", edit: func(d map[string]any) { relay(d)["status"] = "paused" },
		want: []Error{{relayP + ".status", `"paused" is not one of running, stopped`}}},
	{name: "restartPolicy", edit: func(d map[string]any) { relay(d)["restartPolicy"] = "sometimes" },
		want: []Error{{relayP + ".restartPolicy", `"sometimes" is not one of never, on-failure, on-unhealthy, always`}}},
	{name: "imagePullPolicy", edit: func(d map[string]any) { relay(d)["imagePullPolicy"] = "always" },
		want: []Error{{relayP + ".imagePullPolicy", `"always" is not one of on-create, never`}}},
	{name: "startupOrder high", edit: func(d map[string]any) { relay(d)["startupOrder"] = num("4294967296") },
		want: []Error{{relayP + ".startupOrder", "must be an integer from 0 to 4294967295"}}},
	{name: "startupOrder fraction", edit: func(d map[string]any) { relay(d)["startupOrder"] = num("1.5") },
		want: []Error{{relayP + ".startupOrder", "must be an integer from 0 to 4294967295"}}},
	{name: "no settings", edit: func(d map[string]any) { delete(relay(d), "settings") },
		want: []Error{{relayP + ".settings", "required"}}},
	{name: "empty image", edit: func(d map[string]any) { at(relay(d), "settings")["image"] = "" },
		want: []Error{{relayP + ".settings.image", "must not be empty"}}},
	{name: "createOptions object", edit: func(d map[string]any) {
		s := at(relay(d), "settings")
		delete(s, "createOptions01")
		s["createOptions"] = map[string]any{"HostConfig": map[string]any{}}
	}, want: []Error{{relayP + ".settings.createOptions", "must be a string of Docker create options in JSON"}}},
	{name: "chunk too long", edit: func(d map[string]any) {
		s := at(relay(d), "settings")
		delete(s, "createOptions01")
		s["createOptions"] = `{"A":"` + strings.Repeat("é", 506) + `"}`
	}, want: []Error{{relayP + ".settings.createOptions", "514 characters; a chunk holds at most 512, continue in createOptions01, createOptions02, …"}}},
	{name: "chunk too long in UTF-16", edit: func(d map[string]any) {
		s := at(relay(d), "settings")
		delete(s, "createOptions01")
		s["createOptions"] = `{"A":"` + strings.Repeat("😀", 253) + `"}`
	}, want: []Error{{relayP + ".settings.createOptions", "514 characters; a chunk holds at most 512, continue in createOptions01, createOptions02, …"}}},
	{name: "chunk gap", edit: func(d map[string]any) {
		s := at(relay(d), "settings")
		s["createOptions02"] = s["createOptions01"]
		delete(s, "createOptions01")
	}, want: []Error{{relayP + ".settings.createOptions01", "required: chunks must be consecutive"}}},
	{name: "chunk name", edit: func(d map[string]any) { at(relay(d), "settings")["createOptions1"] = "" },
		want: []Error{{relayP + ".settings.createOptions1", "chunks are named createOptions and createOptions01 to createOptions99"}}},
	{name: "chunk 100", edit: func(d map[string]any) { at(relay(d), "settings")["createOptions100"] = "" },
		want: []Error{{relayP + ".settings.createOptions100", "chunks are named createOptions and createOptions01 to createOptions99"}}},
	{name: "chunks not JSON", edit: func(d map[string]any) { delete(at(relay(d), "settings"), "createOptions01") },
		want: []Error{{relayP + ".settings.createOptions", "chunks together must be a JSON object (Docker create options)"}}},
	{name: "createOptions array", edit: func(d map[string]any) {
		s := at(relay(d), "settings")
		s["createOptions"], s["createOptions01"] = "[", "]"
	}, want: []Error{{relayP + ".settings.createOptions", "chunks together must be a JSON object (Docker create options)"}}},
	{name: "env name", edit: func(d map[string]any) { at(relay(d), "env")["A+B"] = map[string]any{"value": "1"} },
		want: []Error{{relayP + ".env['A+B']", `names must match ^[^\+#$\s\.]+$`}}},
	{name: "env plain value", edit: func(d map[string]any) { at(relay(d), "env")["X"] = "1" },
		want: []Error{{relayP + ".env.X", `must be {"value": <string|number|bool>}`}}},
	{name: "env no value", edit: func(d map[string]any) { at(relay(d), "env")["X"] = map[string]any{"val": "1"} },
		want: []Error{{relayP + ".env.X.value", "required; a string, number or boolean"}}},
	{name: "env object value", edit: func(d map[string]any) { at(relay(d), "env")["X"] = map[string]any{"value": map[string]any{}} },
		want: []Error{{relayP + ".env.X.value", "must be a string, number or boolean"}}},

	{name: "hub schema", edit: func(d map[string]any) { hub(d)["schemaVersion"] = "1.4" },
		want: []Error{{hubP + ".schemaVersion", `"1.4" is not one of 1.0, 1.1, 1.2, 1.3`}}},
	{name: "no routes", edit: func(d map[string]any) { delete(hub(d), "routes") },
		want: []Error{{hubP + ".routes", "required"}}},
	{name: "route name", edit: func(d map[string]any) { routes(d)["a#b"] = "FROM /* INTO $upstream" },
		want: []Error{{hubP + ".routes['a#b']", `route names must match ^[^\.\$# ]+$`}}},
	{name: "route syntax", edit: func(d map[string]any) { routes(d)["x"] = "FROM /messages/* TO $upstream" },
		want: []Error{{hubP + ".routes.x", "want FROM <source> [WHERE <condition>] INTO <sink>"}}},
	{name: "route sink", edit: func(d map[string]any) { routes(d)["x"] = `FROM /* INTO BrokeredEndpoint("/modules/relay/readings")` },
		want: []Error{{hubP + ".routes.x", `sink "BrokeredEndpoint(\"/modules/relay/readings\")": want $upstream or BrokeredEndpoint("/modules/<m>/inputs/<i>")`}}},
	{name: "route type", edit: func(d map[string]any) { routes(d)["x"] = num("1") },
		want: []Error{{hubP + ".routes.x", `must be a route string or {"route": ..., "priority": 0-9, "timeToLiveSecs": ...}`}}},
	{name: "route object no route", edit: func(d map[string]any) { delete(at(routes(d), "relayToHub"), "route") },
		want: []Error{{hubP + ".routes.relayToHub.route", "required"}}},
	{name: "route object syntax", edit: func(d map[string]any) { at(routes(d), "relayToHub")["route"] = "FROM /x INTO $upstream" },
		want: []Error{{hubP + ".routes.relayToHub.route", `source "/x": want /*, /twinChangeNotifications, /messages/*, /messages/modules/*, /messages/modules/<m>/*, /messages/modules/<m>/outputs/* or /messages/modules/<m>/outputs/<o>`}}},
	{name: "route priority", edit: func(d map[string]any) { at(routes(d), "relayToHub")["priority"] = num("10") },
		want: []Error{{hubP + ".routes.relayToHub.priority", "must be an integer from 0 to 9"}}},
	{name: "route ttl", edit: func(d map[string]any) { at(routes(d), "relayToHub")["timeToLiveSecs"] = num("-1") },
		want: []Error{{hubP + ".routes.relayToHub.timeToLiveSecs", "must be an integer from 0 to 4294967295"}}},
	{name: "route object schema 1.0", edit: func(d map[string]any) { hub(d)["schemaVersion"] = "1.0" },
		want: []Error{{hubP + ".routes.relayToHub", "route objects need schemaVersion 1.1 or later"}}},
	{name: "no storeAndForward", edit: func(d map[string]any) { delete(hub(d), "storeAndForwardConfiguration") },
		want: []Error{{hubP + ".storeAndForwardConfiguration", "required"}}},
	{name: "no ttl", edit: func(d map[string]any) { delete(at(hub(d), "storeAndForwardConfiguration"), "timeToLiveSecs") },
		want: []Error{{hubP + ".storeAndForwardConfiguration.timeToLiveSecs", "required"}}},
	{name: "ttl string", edit: func(d map[string]any) { at(hub(d), "storeAndForwardConfiguration")["timeToLiveSecs"] = "7200" },
		want: []Error{{hubP + ".storeAndForwardConfiguration.timeToLiveSecs", "must be an integer from -2147483648 to 2147483647"}}},

	{name: "twin array", edit: func(d map[string]any) { relayTwin(d)["sources"] = []any{"press"} },
		want: []Error{{twinP + ".sources", "twins hold no arrays; use an object keyed by name"}}},
	{name: "twin key $", edit: func(d map[string]any) { relayTwin(d)["$version"] = num("3") },
		want: []Error{{twinP + "['$version']", "twin keys must not be empty or hold '.', '$', spaces or control characters"}}},
	{name: "twin key dot", edit: func(d map[string]any) { at(relayTwin(d), "sources")["a.b"] = map[string]any{} },
		want: []Error{{twinP + ".sources['a.b']", "twin keys must not be empty or hold '.', '$', spaces or control characters"}}},
	{name: "twin key control", edit: func(d map[string]any) { relayTwin(d)["a\x7f"] = true },
		want: []Error{{twinP + "['a\x7f']", "twin keys must not be empty or hold '.', '$', spaces or control characters"}}},
	{name: "twin depth", edit: func(d map[string]any) {
		m := relayTwin(d)
		for range 11 {
			n := map[string]any{}
			m["n"] = n
			m = n
		}
	}, want: []Error{{twinP + strings.Repeat(".n", 11), "objects nest more than 10 levels below properties.desired"}}},
	{name: "twin size", edit: func(d map[string]any) { relayTwin(d)["big"] = strings.Repeat("x", 32*1024) },
		want: []Error{{twinP, "32839 bytes serialized; a twin's desired properties hold at most 32768"}}},
	{name: "agent twin array", edit: func(d map[string]any) { at(agent(d), "runtime", "settings")["x"] = []any{} },
		want: []Error{{agentP + ".runtime.settings.x", "twins hold no arrays; use an object keyed by name"}}},

	{name: "layered system module", doc: `{"modulesContent": {"$edgeAgent": {"properties.desired.systemModules.edgeHub": {}}}}`,
		want: []Error{{mcP + "['$edgeAgent']['properties.desired.systemModules.edgeHub']", "a layered deployment must not set system modules"}}},
	{name: "layered whole desired", doc: `{"modulesContent": {"$edgeAgent": {"properties.desired": {}}, "relay": {"properties.desired.x": 1}}}`,
		want: []Error{{mcP + "['$edgeAgent']['properties.desired']", `a layered deployment sets keys "properties.desired.<path>"`}}},
	{name: "layered no $edgeAgent", doc: `{"modulesContent": {"relay": {"properties.desired.x": 1}}}`,
		want: []Error{{mcP + "['$edgeAgent']", "required"}}},
	{name: "layered module", doc: validLayered, edit: func(d map[string]any) {
		at(d, "modulesContent", "$edgeAgent", "properties.desired.modules.filtermodule")["status"] = "up"
	}, want: []Error{{mcP + "['$edgeAgent']['properties.desired.modules.filtermodule'].status", `"up" is not one of running, stopped`}}},
	{name: "layered module name", doc: `{"modulesContent": {"$edgeAgent": {"properties.desired.modules.a+b.env": {}}}}`,
		want: []Error{{mcP + "['$edgeAgent']['properties.desired.modules.a+b.env']", "module names must match ^[a-zA-Z0-9_-]+$"}}},
	{name: "layered modules", doc: `{"modulesContent": {"$edgeAgent": {"properties.desired.modules": {"m": {"type": "docker"}}}}}`,
		want: []Error{{mcP + "['$edgeAgent']['properties.desired.modules'].m.settings", "required"}}},
	{name: "layered agent schema", doc: `{"modulesContent": {"$edgeAgent": {"properties.desired.schemaVersion": "2.0"}}}`,
		want: []Error{{mcP + "['$edgeAgent']['properties.desired.schemaVersion']", `"2.0" is not one of 1.0, 1.1`}}},
	{name: "layered route", doc: validLayered, edit: func(d map[string]any) {
		at(d, "modulesContent", "$edgeHub")["properties.desired.routes.filterToHub"] = "FROM /* INTO upstream"
	}, want: []Error{{mcP + "['$edgeHub']['properties.desired.routes.filterToHub']", `sink "upstream": want $upstream or BrokeredEndpoint("/modules/<m>/inputs/<i>")`}}},
	{name: "layered routes", doc: `{"modulesContent": {"$edgeAgent": {}, "$edgeHub": {"properties.desired.routes": {"r": {"route": "FROM /* INTO $upstream", "priority": 12}}}}}`,
		want: []Error{{mcP + "['$edgeHub']['properties.desired.routes'].r.priority", "must be an integer from 0 to 9"}}},
	{name: "layered ttl", doc: `{"modulesContent": {"$edgeAgent": {}, "$edgeHub": {"properties.desired.storeAndForwardConfiguration.timeToLiveSecs": "1h"}}}`,
		want: []Error{{mcP + "['$edgeHub']['properties.desired.storeAndForwardConfiguration.timeToLiveSecs']", "must be an integer from -2147483648 to 2147483647"}}},
	{name: "layered hub schema", doc: `{"modulesContent": {"$edgeAgent": {}, "$edgeHub": {"properties.desired.schemaVersion": 1.2}}}`,
		want: []Error{{mcP + "['$edgeHub']['properties.desired.schemaVersion']", "must be a string"}}},
	{name: "layered storeAndForward", doc: `{"modulesContent": {"$edgeAgent": {}, "$edgeHub": {"properties.desired.storeAndForwardConfiguration": {"timeToLiveSecs": 1e3}}}}`,
		want: []Error{{mcP + "['$edgeHub']['properties.desired.storeAndForwardConfiguration'].timeToLiveSecs", "must be an integer from -2147483648 to 2147483647"}}},
	{name: "layered path segment", doc: `{"modulesContent": {"$edgeAgent": {}, "relay": {"properties.desired.$x": 1}}}`,
		want: []Error{{mcP + ".relay['properties.desired.$x']", "path segments must not be empty or hold '$', spaces or control characters"}}},
	{name: "layered unknown key", doc: `{"modulesContent": {"$edgeAgent": {}, "relay": {"properties": {}}}}`,
		want: []Error{{mcP + ".relay.properties", `a layered deployment sets keys "properties.desired.<path>"`}}},
	{name: "layered depth", doc: `{"modulesContent": {"$edgeAgent": {}, "relay": {"properties.desired.a.b.c.d.e.f.g.h.i.j": {"k": {}}}}}`,
		want: []Error{{mcP + ".relay['properties.desired.a.b.c.d.e.f.g.h.i.j'].k", "objects nest more than 10 levels below properties.desired"}}},
	{name: "layered array", doc: `{"modulesContent": {"$edgeAgent": {}, "relay": {"properties.desired": {"s": [1]}}}}`,
		want: []Error{{mcP + ".relay['properties.desired'].s", "twins hold no arrays; use an object keyed by name"}}},
}

// problems returns the *Errors joined in err, sorted.
func problems(t *testing.T, err error) []Error {
	t.Helper()
	if err == nil {
		return nil
	}
	joined, ok := err.(interface{ Unwrap() []error })
	if !ok {
		t.Fatalf("Validate returned %T, want errors.Join", err)
	}
	var out []Error
	for _, e := range joined.Unwrap() {
		var ve *Error
		if !errors.As(e, &ve) {
			t.Fatalf("Validate returned %T, want *Error", e)
		}
		out = append(out, *ve)
	}
	sortErrors(out)
	return out
}

func sortErrors(errs []Error) {
	slices.SortFunc(errs, func(a, b Error) int { return cmp.Or(cmp.Compare(a.Path, b.Path), cmp.Compare(a.Msg, b.Msg)) })
}

func TestValidate(t *testing.T) {
	for _, tc := range validateCases {
		t.Run(tc.name, func(t *testing.T) {
			in := tc.input(t)
			got := problems(t, Validate(in))
			want := slices.Clone(tc.want)
			sortErrors(want)
			if !slices.Equal(got, want) {
				t.Errorf("Validate(%s)\n = %q\nwant %q", shorten(in), got, want)
			}
		})
	}
}

func TestErrorString(t *testing.T) {
	err := Validate([]byte(`{"modulesContent": {"$edgeHub": 1}}`))
	want := "$.modulesContent['$edgeAgent']: required\n$.modulesContent['$edgeHub']: must be an object"
	if err == nil || err.Error() != want {
		t.Errorf("Validate(...).Error() = %q, want %q", err, want)
	}
}

func TestChild(t *testing.T) {
	for _, tc := range []struct{ key, want string }{
		{"modules", "$.modules"},
		{"_x1", "$._x1"},
		{"1x", "$['1x']"},
		{"$edgeAgent", "$['$edgeAgent']"},
		{"it's", `$['it\'s']`},
		{`a\b`, `$['a\\b']`},
		{"", "$['']"},
	} {
		if got := child("$", tc.key); got != tc.want {
			t.Errorf("child($, %q) = %s, want %s", tc.key, got, tc.want)
		}
	}
}

func FuzzValidate(f *testing.F) {
	for _, tc := range validateCases {
		// The size cases only slow the fuzzer down: it minimizes every
		// input that finds something new.
		if in := tc.input(f); len(in) < 4096 {
			f.Add(in)
		}
	}
	f.Fuzz(func(t *testing.T, doc []byte) {
		if Validate(doc) != nil {
			return
		}
		// What passes, passes again after IoT Hub stores and returns it.
		v, err := decode(doc)
		if err != nil {
			t.Fatalf("Validate accepted what decode rejects: %v", err)
		}
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		if err := Validate(b); err != nil {
			t.Errorf("Validate(%q) = nil, but after a round trip Validate(%q) = %v", doc, b, err)
		}
		if !bytes.Equal(b, mustCompact(t, b)) {
			t.Errorf("round trip not stable")
		}
	})
}

func mustCompact(t *testing.T, b []byte) []byte {
	v, err := decode(b)
	if err != nil {
		t.Fatal(err)
	}
	out, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// shorten keeps failure messages readable for the large inputs.
func shorten(b []byte) string {
	if len(b) > 300 {
		return string(b[:300]) + "…"
	}
	return string(b)
}
