package deadletter

import (
	"encoding/json"
	"strings"
	"testing"
)

// Method payloads come from whoever may call direct methods: whatever
// they hold, the answer is JSON within MaxAnswer and a bad request is a
// 4xx, never a panic.
func FuzzMethod(f *testing.F) {
	for _, name := range []string{MethodList, MethodGet, MethodPurge} {
		for _, p := range []string{``, `null`, `{}`, `{"after":"","limit":100}`, `{"after":"0000000000000001","limit":2}`,
			`{"limit":-1}`, `{"id":"0000000000000000","offset":0}`, `{"id":"0000000000000000","offset":99999999}`,
			`{"id":"zz"}`, `{"ids":["0000000000000002"]}`, `{"all":false}`, `nonsense`} {
			f.Add(name, []byte(p))
		}
	}
	s, err := Open(f.TempDir(), Options{})
	if err != nil {
		f.Fatal(err)
	}
	fill := func() {
		for i := range 3 {
			l := letter(i, []byte(strings.Repeat("x", 70_000*i)))
			if err := s.Put(l); err != nil {
				f.Fatal(err)
			}
		}
	}
	fill()
	f.Fuzz(func(t *testing.T, name string, payload []byte) {
		status, ans, ok := s.Method(name, payload)
		if !ok {
			return
		}
		if len(ans) > MaxAnswer || !json.Valid(ans) || status != 200 && status != 400 && status != 404 {
			t.Fatalf("%s(%q) = %d %d bytes %.100s", name, payload, status, len(ans), ans)
		}
		if name == MethodPurge && s.Stats().Count == 0 {
			fill()
		}
	})
}
