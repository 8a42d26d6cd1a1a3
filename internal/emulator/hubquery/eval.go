package hubquery

import (
	"cmp"
	"encoding/json"
	"strconv"
)

// Match evaluates c on a twin document: {"deviceId": "...", "moduleId":
// "..." (module twins), "tags": {...}, "properties": {"desired": {...},
// "reported": {...}}}. A nil Condition matches every twin.
func (c *Condition) Match(twin map[string]any) bool {
	if c == nil || c.root == nil {
		return true
	}
	return c.root.match(twin)
}

// Count returns how many of twins match q (twins already filtered to q.From's
// kind by the caller).
func (q *Query) Count(twins []map[string]any) int {
	n := 0
	for _, t := range twins {
		if q.Where.Match(t) {
			n++
		}
	}
	return n
}

type node interface {
	match(twin map[string]any) bool
}

// AND and OR chains are flat so that a long condition does not recurse deeply.
type (
	andNode     []node
	orNode      []node
	notNode     struct{ x node }
	definedNode struct{ path []string }
	cmpNode     struct {
		path []string
		op   string // = != < <= > >=
		lit  any    // string, float64, bool or nil
	}
	inNode struct {
		path []string
		lits []any
	}
)

func (n andNode) match(twin map[string]any) bool {
	for _, x := range n {
		if !x.match(twin) {
			return false
		}
	}
	return true
}

func (n orNode) match(twin map[string]any) bool {
	for _, x := range n {
		if x.match(twin) {
			return true
		}
	}
	return false
}

func (n notNode) match(twin map[string]any) bool { return !n.x.match(twin) }

func (n definedNode) match(twin map[string]any) bool {
	_, ok := resolve(twin, n.path)
	return ok
}

func (n cmpNode) match(twin map[string]any) bool {
	v, ok := resolve(twin, n.path)
	return ok && compare(v, n.op, n.lit)
}

func (n inNode) match(twin map[string]any) bool {
	v, ok := resolve(twin, n.path)
	if !ok {
		return false
	}
	for _, lit := range n.lits {
		if compare(v, "=", lit) {
			return true
		}
	}
	return false
}

// resolve walks path through nested objects; ok is false where a step is
// missing or not an object. A JSON null resolves to (nil, true).
func resolve(twin map[string]any, path []string) (v any, ok bool) {
	v = twin
	for _, name := range path {
		m, isMap := v.(map[string]any)
		if !isMap {
			return nil, false
		}
		if v, ok = m[name]; !ok {
			return nil, false
		}
	}
	return v, true
}

// compare applies op to a twin value and a literal; different types never
// compare, and null and booleans have no order.
func compare(v any, op string, lit any) bool {
	switch lit := lit.(type) {
	case nil:
		// The path resolved (compare is not called otherwise).
		return op == "=" && v == nil || op == "!=" && v != nil
	case bool:
		b, ok := v.(bool)
		return ok && (op == "=" && b == lit || op == "!=" && b != lit)
	case string:
		s, ok := v.(string)
		return ok && ordered(s, op, lit)
	case float64:
		f, ok := number(v)
		return ok && ordered(f, op, lit)
	}
	return false
}

func ordered[T cmp.Ordered](a T, op string, b T) bool {
	switch op {
	case "=":
		return a == b
	case "!=":
		return a != b
	case "<":
		return a < b
	case "<=":
		return a <= b
	case ">":
		return a > b
	case ">=":
		return a >= b
	}
	return false
}

// number accepts what encoding/json produces (float64, or json.Number with
// UseNumber) and the integer types a hand-built twin may hold.
func number(v any) (float64, bool) {
	switch n := v.(type) {
	case float64:
		return n, true
	case float32:
		return float64(n), true
	case int:
		return float64(n), true
	case int32:
		return float64(n), true
	case int64:
		return float64(n), true
	case uint:
		return float64(n), true
	case uint32:
		return float64(n), true
	case uint64:
		return float64(n), true
	case json.Number:
		f, err := strconv.ParseFloat(string(n), 64)
		return f, err == nil
	}
	return 0, false
}
