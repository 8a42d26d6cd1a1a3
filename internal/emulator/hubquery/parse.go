package hubquery

import "strings"

// Condition is a parsed WHERE clause or deployment targetCondition.
type Condition struct{ root node }

// Query is SELECT ... FROM devices|devices.modules [WHERE cond].
type Query struct {
	Select []string   // "*" or property paths such as deviceId; only used to name results
	From   string     // "devices" or "devices.modules"
	Where  *Condition // nil: every twin
}

// maxDepth bounds nested NOT and parentheses so that a hostile condition
// sent to the emulator cannot exhaust the stack.
const maxDepth = 100

type parser struct {
	lx    lexer
	depth int
}

// ParseCondition parses a targetCondition such as
//
//	tags.environment='prod' AND (tags.site='plant1' OR deviceId='edge-7')
//
// Errors are *SyntaxError.
func ParseCondition(s string) (*Condition, error) {
	p := &parser{lx: lexer{src: s}}
	n, err := p.or()
	if err != nil {
		return nil, err
	}
	if err := p.end("AND, OR"); err != nil {
		return nil, err
	}
	return &Condition{root: n}, nil
}

// ParseQuery parses SELECT <* or paths> FROM devices|devices.modules
// [WHERE <condition>], the form of a deployment's metric queries. Errors are
// *SyntaxError.
func ParseQuery(s string) (*Query, error) {
	p := &parser{lx: lexer{src: s}}
	if err := p.expect("SELECT"); err != nil {
		return nil, err
	}
	q := &Query{}
	t, err := p.lx.Peek()
	if err != nil {
		return nil, err
	}
	if t.is("*") {
		p.lx.Next()
		q.Select = []string{"*"}
	} else {
		for {
			pa, err := p.path()
			if err != nil {
				return nil, err
			}
			q.Select = append(q.Select, pa.text)
			if t, err := p.lx.Peek(); err != nil {
				return nil, err
			} else if !t.is(",") {
				break
			}
			p.lx.Next()
		}
	}
	if err := p.expect("FROM"); err != nil {
		return nil, err
	}
	from, err := p.path()
	if err != nil {
		return nil, err
	}
	q.From = strings.ToLower(from.text)
	if q.From != "devices" && q.From != "devices.modules" {
		return nil, p.lx.errorf(from.pos, "unknown collection %q: want devices or devices.modules", from.text)
	}
	t, err = p.lx.Peek()
	if err != nil {
		return nil, err
	}
	if !t.is("WHERE") {
		if err := p.end("WHERE"); err != nil {
			return nil, err
		}
		return q, nil
	}
	p.lx.Next()
	n, err := p.or()
	if err != nil {
		return nil, err
	}
	q.Where = &Condition{root: n}
	if err := p.end("AND, OR"); err != nil {
		return nil, err
	}
	return q, nil
}

// expect consumes the punctuation or keyword want.
func (p *parser) expect(want string) error {
	t, err := p.lx.Next()
	if err != nil {
		return err
	}
	if !t.is(want) {
		return p.lx.errorf(t.pos, "expected %q, found %v", want, t)
	}
	return nil
}

// end expects the end of the input, where the alternatives (such as
// "AND, OR") could have continued it.
func (p *parser) end(alternatives string) error {
	t, err := p.lx.Next()
	if err != nil {
		return err
	}
	if t.kind != tEOF {
		return p.lx.errorf(t.pos, "expected %s or end of input, found %v", alternatives, t)
	}
	return nil
}

func (p *parser) or() (node, error) {
	terms, err := p.chain("OR", p.and)
	if err != nil {
		return nil, err
	}
	if len(terms) == 1 {
		return terms[0], nil
	}
	return orNode(terms), nil
}

func (p *parser) and() (node, error) {
	terms, err := p.chain("AND", p.not)
	if err != nil {
		return nil, err
	}
	if len(terms) == 1 {
		return terms[0], nil
	}
	return andNode(terms), nil
}

// chain parses term (keyword term)*, flat, so that long chains do not
// recurse.
func (p *parser) chain(keyword string, term func() (node, error)) ([]node, error) {
	var terms []node
	for {
		n, err := term()
		if err != nil {
			return nil, err
		}
		terms = append(terms, n)
		t, err := p.lx.Peek()
		if err != nil {
			return nil, err
		}
		if !t.is(keyword) {
			return terms, nil
		}
		p.lx.Next()
	}
}

func (p *parser) not() (node, error) {
	t, err := p.lx.Peek()
	if err != nil {
		return nil, err
	}
	if !t.is("NOT") && !t.is("(") {
		return p.comparison()
	}
	if p.depth == maxDepth {
		return nil, p.lx.errorf(t.pos, "nested deeper than %d levels", maxDepth)
	}
	p.depth++
	defer func() { p.depth-- }()
	p.lx.Next()
	if t.is("NOT") {
		x, err := p.not()
		if err != nil {
			return nil, err
		}
		return notNode{x}, nil
	}
	x, err := p.or()
	if err != nil {
		return nil, err
	}
	if err := p.expect(")"); err != nil {
		return nil, err
	}
	return x, nil
}

func (p *parser) comparison() (node, error) {
	t, err := p.lx.Peek()
	if err != nil {
		return nil, err
	}
	if t.is("IS_DEFINED") {
		p.lx.Next()
		if err := p.expect("("); err != nil {
			return nil, err
		}
		pa, err := p.path()
		if err != nil {
			return nil, err
		}
		if err := p.expect(")"); err != nil {
			return nil, err
		}
		return definedNode{pa.segs}, nil
	}
	pa, err := p.path()
	if err != nil {
		return nil, err
	}
	op, err := p.lx.Next()
	if err != nil {
		return nil, err
	}
	if op.is("IN") {
		if err := p.expect("["); err != nil {
			return nil, err
		}
		var lits []any
		for {
			v, err := p.literal()
			if err != nil {
				return nil, err
			}
			lits = append(lits, v)
			t, err := p.lx.Next()
			if err != nil {
				return nil, err
			}
			if t.is("]") {
				return inNode{pa.segs, lits}, nil
			}
			if !t.is(",") {
				return nil, p.lx.errorf(t.pos, "expected \",\" or \"]\" in the IN list, found %v", t)
			}
		}
	}
	if op.kind != tOp {
		return nil, p.lx.errorf(op.pos, "expected an operator or IN after %s, found %v", pa.text, op)
	}
	v, err := p.literal()
	if err != nil {
		return nil, err
	}
	o := op.text
	if o == "<>" {
		o = "!="
	}
	return cmpNode{pa.segs, o, v}, nil
}

type path struct {
	segs []string
	text string // as written, without spaces: tags.[odd name].x
	pos  int
}

// reserved words cannot start a path; naming them in the error beats a
// confusing complaint about what follows.
var reserved = []string{"AND", "OR", "NOT", "IN", "IS_DEFINED", "TRUE", "FALSE", "NULL", "SELECT", "FROM", "WHERE"}

func (p *parser) path() (path, error) {
	t, err := p.lx.Next()
	if err != nil {
		return path{}, err
	}
	if t.kind != tName || isReserved(t.text) {
		return path{}, p.lx.errorf(t.pos, "expected a property path, found %v", t)
	}
	pa := path{segs: []string{t.text}, text: t.text, pos: t.pos}
	for {
		t, err := p.lx.Peek()
		if err != nil {
			return path{}, err
		}
		if !t.is(".") {
			return pa, nil
		}
		p.lx.Next()
		t, err = p.lx.Next()
		if err != nil {
			return path{}, err
		}
		switch {
		case t.kind == tName:
			pa.segs = append(pa.segs, t.text)
			pa.text += "." + t.text
		case t.is("["):
			// [name], or [[name]] as in configurations.[[id]].status.
			double := p.lx.Skip('[')
			name, pos, err := p.lx.RawUntil(']')
			if err != nil {
				return path{}, err
			}
			if name == "" {
				return path{}, p.lx.errorf(pos, "empty [name] in a path")
			}
			if double && !p.lx.Skip(']') {
				return path{}, p.lx.errorf(pos+len(name)+1, "missing \"]]\" after [[%s", name)
			}
			pa.segs = append(pa.segs, name)
			pa.text += ".[" + name + "]"
		default:
			return path{}, p.lx.errorf(t.pos, "expected a property name after \".\", found %v", t)
		}
	}
}

func isReserved(s string) bool {
	for _, r := range reserved {
		if strings.EqualFold(s, r) {
			return true
		}
	}
	return false
}

// literal returns a string, float64, bool or nil (null).
func (p *parser) literal() (any, error) {
	t, err := p.lx.Next()
	if err != nil {
		return nil, err
	}
	switch {
	case t.kind == tString:
		return t.str, nil
	case t.kind == tNumber:
		return t.num, nil
	case t.is("true"):
		return true, nil
	case t.is("false"):
		return false, nil
	case t.is("null"):
		return nil, nil
	}
	return nil, p.lx.errorf(t.pos, "expected a literal ('string', number, true, false or null), found %v", t)
}
