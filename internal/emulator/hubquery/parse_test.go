package hubquery

import (
	"errors"
	"slices"
	"strings"
	"testing"
)

// badConditions are conditions that must not parse, with where and why.
var badConditions = []struct {
	in     string
	offset int
	msg    string
}{
	{"", 0, "expected a property path, found end of input"},
	{"   ", 3, "expected a property path, found end of input"},
	{`tags.env = "prod"`, 11, "double-quoted string"},
	{"tags.env = 'prod", 11, "unterminated string"},
	{"tags.env = 'it''s", 11, "unterminated string"},
	{"tags.env 'prod'", 9, `expected an operator or IN after tags.env, found "'prod'"`},
	{"tags.env = ", 11, "expected a literal"},
	{"tags.env = prod", 11, `expected a literal ('string', number, true, false or null), found "prod"`},
	{"tags.env == 'a'", 10, `expected a literal`},
	{"tags.env = 'a' AND", 18, "expected a property path, found end of input"},
	{"tags.env = 'a' OR OR x = 1", 18, `expected a property path, found "OR"`},
	{"(tags.env = 'a'", 15, `expected ")", found end of input`},
	{"tags.env = 'a')", 14, `expected AND, OR or end of input, found ")"`},
	{"tags.env = 'a' tags.x = 1", 15, `expected AND, OR or end of input, found "tags"`},
	{"tags. = 1", 6, `expected a property name after ".", found "="`},
	{"tags..x = 1", 5, `expected a property name after "."`},
	{"tags.env ! 'a'", 9, "'!' must be followed by '='"},
	{"tags.env = -x", 11, "'-' must be followed by a digit"},
	{"tags.env = 1.e5", 13, "expected a digit after the decimal point"},
	{"tags.env = 1e", 13, "expected a digit in the exponent"},
	{"tags.env = 12abc", 11, `malformed number "12a"`},
	{"tags.env = 1e999", 11, "number 1e999 out of range"},
	{"tags.env IN []", 13, `expected a literal ('string', number, true, false or null), found "]"`},
	{"tags.env IN ['a' 'b']", 17, `expected "," or "]" in the IN list, found "'b'"`},
	{"tags.env IN ['a',", 17, "expected a literal"},
	{"tags.env IN 'a'", 12, `expected "[", found "'a'"`},
	{"IS_DEFINED tags.x", 11, `expected "(", found "tags"`},
	{"IS_DEFINED(tags.x", 17, `expected ")", found end of input`},
	{"is_defined()", 11, `expected a property path, found ")"`},
	{"AND = 1", 0, `expected a property path, found "AND"`},
	{"true = 1", 0, `expected a property path, found "true"`},
	{"3 = tags.x", 0, `expected a property path, found "3"`},
	{"'a' = tags.x", 0, `expected a property path, found "'a'"`},
	{"tags.[] = 1", 6, "empty [name] in a path"},
	{"tags.[abc = 1", 13, `missing ']'`},
	{"tags.env = 'a' # x", 15, "unexpected character '#'"},
	{"tags.env = 'a' AND NOT", 22, "expected a property path, found end of input"},
	{"NOT", 3, "expected a property path"},
	{"()", 1, `expected a property path, found ")"`},
	{"tags.x = tags.y", 9, `expected a literal ('string', number, true, false or null), found "tags"`},
	{strings.Repeat("(", 101) + "a=1" + strings.Repeat(")", 101), 100, "nested deeper than 100 levels"},
	{strings.Repeat("NOT ", 101) + "a=1", 400, "nested deeper than 100 levels"},
}

func TestParseConditionErrors(t *testing.T) {
	for _, tt := range badConditions {
		c, err := ParseCondition(tt.in)
		var se *SyntaxError
		if !errors.As(err, &se) {
			t.Errorf("ParseCondition(%q) = %v, %v; want *SyntaxError", tt.in, c, err)
			continue
		}
		if se.Offset != tt.offset || !strings.Contains(se.Msg, tt.msg) {
			t.Errorf("ParseCondition(%q) error = offset %d %q, want offset %d containing %q", tt.in, se.Offset, se.Msg, tt.offset, tt.msg)
		}
		if c != nil {
			t.Errorf("ParseCondition(%q) returned a condition with its error", tt.in)
		}
	}
}

func TestSyntaxErrorText(t *testing.T) {
	_, err := ParseCondition("tags.env = 'a' OR")
	want := "hubquery: offset 17: expected a property path, found end of input"
	if err == nil || err.Error() != want {
		t.Errorf("error = %v, want %s", err, want)
	}
}

// goodConditions parse; what they match is in TestMatch.
var goodConditions = []string{
	"tags.environment='prod' AND (tags.site='plant1' OR deviceId='edge-7')",
	"tags.environment='prod' AND tags.site='plant1'",
	"moduleId='$edgeAgent' AND properties.reported.lastDesiredStatus.code = 200",
	"deviceId IN ['a', 'b', 3, -4.5e1, true, false, null]",
	"NOT NOT is_defined ( tags . x )",
	"tags.[odd name!] <> 'O''Brien'",
	"a<1 or a<=1 Or a>1 oR a>=1 aNd a!=1 AND a<>1",
	"\ttags.x\n=\r1 ",
	strings.Repeat("(", 100) + "a=1" + strings.Repeat(")", 100),
	strings.Repeat("NOT ", 100) + "a=1",
	strings.Repeat("a=1 AND ", 10000) + "a=1",
}

func TestParseConditionGood(t *testing.T) {
	for _, in := range goodConditions {
		if _, err := ParseCondition(in); err != nil {
			t.Errorf("ParseCondition(%q) = %v", in, err)
		}
	}
}

var goodQueries = []struct {
	in     string
	sel    []string
	from   string
	hasWhe bool
}{
	{"SELECT * FROM devices", []string{"*"}, "devices", false},
	{"select * from devices.modules", []string{"*"}, "devices.modules", false},
	{"SELECT deviceId FROM devices.modules WHERE moduleId='$edgeAgent' AND properties.reported.lastDesiredStatus.code = 200",
		[]string{"deviceId"}, "devices.modules", true},
	{"SELECT deviceId, moduleId FROM Devices.Modules WHERE moduleId = '$edgeAgent'", []string{"deviceId", "moduleId"}, "devices.modules", true},
	{"SELECT properties.reported.[odd name], tags.a.b FROM devices where NOT tags.x = 1", []string{"properties.reported.[odd name]", "tags.a.b"}, "devices", true},
}

func TestParseQuery(t *testing.T) {
	for _, tt := range goodQueries {
		q, err := ParseQuery(tt.in)
		if err != nil {
			t.Errorf("ParseQuery(%q) = %v", tt.in, err)
			continue
		}
		if !slices.Equal(q.Select, tt.sel) || q.From != tt.from || (q.Where != nil) != tt.hasWhe {
			t.Errorf("ParseQuery(%q) = %q FROM %q where %v, want %q FROM %q where %v", tt.in, q.Select, q.From, q.Where != nil, tt.sel, tt.from, tt.hasWhe)
		}
	}
}

var badQueries = []struct {
	in     string
	offset int
	msg    string
}{
	{"", 0, `expected "SELECT", found end of input`},
	{"DELETE FROM devices", 0, `expected "SELECT", found "DELETE"`},
	{"SELECT FROM devices", 7, `expected a property path, found "FROM"`},
	{"SELECT * devices", 9, `expected "FROM", found "devices"`},
	{"SELECT *, deviceId FROM devices", 8, `expected "FROM", found ","`},
	{"SELECT deviceId, FROM devices", 17, `expected a property path, found "FROM"`},
	{"SELECT * FROM", 13, "expected a property path, found end of input"},
	{"SELECT * FROM jobs", 14, `unknown collection "jobs": want devices or devices.modules`},
	{"SELECT * FROM devices.jobs", 14, `unknown collection "devices.jobs"`},
	{"SELECT * FROM devices WHERE", 27, "expected a property path, found end of input"},
	{"SELECT * FROM devices LIMIT 5", 22, `expected WHERE or end of input, found "LIMIT"`},
	{"SELECT * FROM devices WHERE a = 1 GROUP BY a", 34, `expected AND, OR or end of input, found "GROUP"`},
	{`SELECT * FROM devices WHERE deviceId = "x"`, 39, "double-quoted string"},
	{"SELECT * FROM devices WHERE (a = 1", 34, `expected ")", found end of input`},
}

func TestParseQueryErrors(t *testing.T) {
	for _, tt := range badQueries {
		q, err := ParseQuery(tt.in)
		var se *SyntaxError
		if !errors.As(err, &se) {
			t.Errorf("ParseQuery(%q) = %v, %v; want *SyntaxError", tt.in, q, err)
			continue
		}
		if se.Offset != tt.offset || !strings.Contains(se.Msg, tt.msg) {
			t.Errorf("ParseQuery(%q) error = offset %d %q, want offset %d containing %q", tt.in, se.Offset, se.Msg, tt.offset, tt.msg)
		}
	}
}
