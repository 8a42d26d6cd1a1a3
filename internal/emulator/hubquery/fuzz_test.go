package hubquery

import (
	"errors"
	"testing"
)

const wherePrefix = "SELECT * FROM devices WHERE "

// checkSyntaxError fails unless err is a *SyntaxError inside the input.
func checkSyntaxError(t *testing.T, in string, err error) *SyntaxError {
	t.Helper()
	var se *SyntaxError
	if !errors.As(err, &se) {
		t.Fatalf("error %v for %q is not a *SyntaxError", err, in)
	}
	if se.Offset < 0 || se.Offset > len(in) || se.Msg == "" {
		t.Fatalf("error for %q: offset %d of %d, message %q", in, se.Offset, len(in), se.Msg)
	}
	return se
}

func FuzzParseCondition(f *testing.F) {
	for _, tt := range badConditions {
		f.Add(tt.in)
	}
	for _, in := range goodConditions {
		f.Add(in)
	}
	for _, tt := range matchTests {
		f.Add(tt.cond)
	}
	twins := loadTwins(f)
	twins["odd"] = map[string]any{"a": []any{1.0, nil}, "tags": "not an object", "n": nil}
	f.Fuzz(func(t *testing.T, in string) {
		c, err := ParseCondition(in)
		// The same text after WHERE must parse the same way, errors
		// shifted by the prefix.
		q, qerr := ParseQuery(wherePrefix + in)
		if err != nil {
			se := checkSyntaxError(t, in, err)
			qse := checkSyntaxError(t, wherePrefix+in, qerr)
			if qse.Offset != se.Offset+len(wherePrefix) || qse.Msg != se.Msg {
				t.Fatalf("ParseCondition(%q) = %v but its query fails with %v", in, err, qerr)
			}
			return
		}
		if qerr != nil {
			t.Fatalf("ParseCondition(%q) succeeds but its query fails with %v", in, qerr)
		}
		for name, twin := range twins {
			want := 0
			if c.Match(twin) {
				want = 1
			}
			if got := q.Count([]map[string]any{twin}); got != want {
				t.Fatalf("%q on %s: Match %v, Count %d", in, name, want == 1, got)
			}
		}
	})
}

func FuzzParseQuery(f *testing.F) {
	for _, tt := range goodQueries {
		f.Add(tt.in)
	}
	for _, tt := range badQueries {
		f.Add(tt.in)
	}
	twins := loadTwins(f)
	all := make([]map[string]any, 0, len(twins))
	for _, twin := range twins {
		all = append(all, twin)
	}
	f.Fuzz(func(t *testing.T, in string) {
		q, err := ParseQuery(in)
		if err != nil {
			checkSyntaxError(t, in, err)
			return
		}
		if len(q.Select) == 0 || q.From != "devices" && q.From != "devices.modules" {
			t.Fatalf("ParseQuery(%q) = %q FROM %q", in, q.Select, q.From)
		}
		if n := q.Count(all); n < 0 || n > len(all) {
			t.Fatalf("ParseQuery(%q).Count = %d of %d", in, n, len(all))
		}
	})
}
