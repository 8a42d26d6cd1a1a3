package twin

import (
	"encoding/json"
	"reflect"
	"testing"
)

// mergeCases are JSON merge patches (RFC 7396) as IoT Hub applies them to
// desired properties (docs/edge-protocol.md#twin-reconciliation).
var mergeCases = []struct{ doc, patch, want string }{
	{`{"a":1}`, `{"a":2}`, `{"a":2}`},
	{`{"a":1,"b":2}`, `{"a":null}`, `{"b":2}`},
	{`{"a":{"x":1,"y":2}}`, `{"a":{"y":null,"z":3}}`, `{"a":{"x":1,"z":3}}`},
	{`{"a":1}`, `{"a":{"x":null,"y":{"z":null}}}`, `{"a":{"y":{}}}`},
	{`{"a":{"x":1}}`, `{"a":[1,{"b":null}]}`, `{"a":[1,{"b":null}]}`},
	{`{"a":{"x":1}}`, `{"a":"s"}`, `{"a":"s"}`},
	{`{}`, `{"$version":4,"sources":{"p":{"url":"tcp://h:1"}}}`, `{"$version":4,"sources":{"p":{"url":"tcp://h:1"}}}`},
	{`{"sources":{"p":{"url":"tcp://h:1"},"q":{"url":"tcp://h:2"}}}`, `{"sources":{"q":null}}`, `{"sources":{"p":{"url":"tcp://h:1"}}}`},
}

func decodeObject(t testing.TB, s string) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal([]byte(s), &m); err != nil {
		t.Fatalf("%s: %v", s, err)
	}
	return m
}

func TestMerge(t *testing.T) {
	for _, tc := range mergeCases {
		doc := decodeObject(t, tc.doc)
		merge(doc, decodeObject(t, tc.patch))
		if want := decodeObject(t, tc.want); !reflect.DeepEqual(doc, want) {
			got, _ := json.Marshal(doc)
			t.Errorf("merge(%s, %s) = %s, want %s", tc.doc, tc.patch, got, tc.want)
		}
	}
}

// checkMerged checks result against RFC 7396 member by member: a member
// the patch names is deleted (null), merged (object) or replaced; any
// other keeps its value.
func checkMerged(t *testing.T, path string, orig, patch, result map[string]any) {
	t.Helper()
	for k, ov := range orig {
		if _, named := patch[k]; !named && !reflect.DeepEqual(result[k], ov) {
			t.Fatalf("%s%s = %v, untouched by the patch, want %v", path, k, result[k], ov)
		}
	}
	for k, pv := range patch {
		rv, present := result[k]
		switch pv := pv.(type) {
		case nil:
			if present {
				t.Fatalf("%s%s = %v, want it deleted", path, k, rv)
			}
		case map[string]any:
			rm, ok := rv.(map[string]any)
			if !ok {
				t.Fatalf("%s%s = %v, want an object", path, k, rv)
			}
			om, _ := orig[k].(map[string]any)
			checkMerged(t, path+k+".", om, pv, rm)
		default:
			if !reflect.DeepEqual(rv, pv) {
				t.Fatalf("%s%s = %v, want %v", path, k, rv, pv)
			}
		}
	}
	for k := range result {
		if _, inOrig := orig[k]; !inOrig {
			if _, inPatch := patch[k]; !inPatch {
				t.Fatalf("%s%s appeared from nowhere", path, k)
			}
		}
	}
}

func FuzzMerge(f *testing.F) {
	for _, tc := range mergeCases {
		f.Add([]byte(tc.doc), []byte(tc.patch))
	}
	f.Fuzz(func(t *testing.T, docJSON, patchJSON []byte) {
		var doc, orig, patch map[string]any
		if json.Unmarshal(docJSON, &doc) != nil || json.Unmarshal(patchJSON, &patch) != nil || doc == nil || patch == nil {
			return
		}
		_ = json.Unmarshal(docJSON, &orig)
		patchBefore, _ := json.Marshal(patch)
		merge(doc, patch)
		if after, _ := json.Marshal(patch); string(after) != string(patchBefore) {
			t.Fatalf("merge changed the patch: %s became %s", patchBefore, after)
		}
		checkMerged(t, "", orig, patch, doc)
		// Applying the same patch again changes nothing.
		once, _ := json.Marshal(doc)
		merge(doc, patch)
		if twice, _ := json.Marshal(doc); string(twice) != string(once) {
			t.Fatalf("a patch applied twice: %s, once: %s", twice, once)
		}
	})
}
