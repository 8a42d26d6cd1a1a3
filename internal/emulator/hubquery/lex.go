package hubquery

import (
	"fmt"
	"strconv"
	"strings"
)

// SyntaxError reports where a condition or query stopped making sense.
type SyntaxError struct {
	Offset int // byte offset into the input, 0-based
	Msg    string
}

func (e *SyntaxError) Error() string {
	return fmt.Sprintf("hubquery: offset %d: %s", e.Offset, e.Msg)
}

type kind int

const (
	tEOF kind = iota
	tName
	tString
	tNumber
	tOp    // = != <> < <= > >=
	tPunct // ( ) [ ] , . *
)

type token struct {
	kind kind
	text string  // source text
	str  string  // the value of a tString
	num  float64 // the value of a tNumber
	pos  int
}

func (t token) String() string {
	if t.kind == tEOF {
		return "end of input"
	}
	return strconv.Quote(t.text)
}

// is reports whether t is the punctuation p or the keyword p (any case).
func (t token) is(p string) bool {
	switch t.kind {
	case tPunct, tOp:
		return t.text == p
	case tName:
		return strings.EqualFold(t.text, p)
	}
	return false
}

// lexer scans on demand so that the parser can read a [bracketed name]
// as raw text where a path segment is expected.
type lexer struct {
	src  string
	pos  int
	peek *token
}

func isNameStart(c byte) bool {
	return c == '_' || c == '$' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z'
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

func (l *lexer) errorf(pos int, format string, args ...any) error {
	return &SyntaxError{Offset: pos, Msg: fmt.Sprintf(format, args...)}
}

// Peek returns the next token without consuming it.
func (l *lexer) Peek() (token, error) {
	if l.peek == nil {
		t, err := l.scan()
		if err != nil {
			return token{}, err
		}
		l.peek = &t
	}
	return *l.peek, nil
}

// Next consumes and returns the next token.
func (l *lexer) Next() (token, error) {
	t, err := l.Peek()
	l.peek = nil
	return t, err
}

// Skip consumes the byte c if it comes next. It must not be called with a
// token peeked.
func (l *lexer) Skip(c byte) bool {
	if l.pos < len(l.src) && l.src[l.pos] == c {
		l.pos++
		return true
	}
	return false
}

// RawUntil consumes the input up to the byte end and the byte itself. It must
// not be called with a token peeked.
func (l *lexer) RawUntil(end byte) (string, int, error) {
	start := l.pos
	i := strings.IndexByte(l.src[start:], end)
	if i < 0 {
		return "", start, l.errorf(len(l.src), "missing %q", end)
	}
	l.pos = start + i + 1
	return l.src[start : start+i], start, nil
}

func (l *lexer) scan() (token, error) {
	for l.pos < len(l.src) && strings.IndexByte(" \t\r\n", l.src[l.pos]) >= 0 {
		l.pos++
	}
	start := l.pos
	if start == len(l.src) {
		return token{kind: tEOF, pos: start}, nil
	}
	c := l.src[start]
	switch {
	case isNameStart(c):
		l.pos++
		for l.pos < len(l.src) && (isNameStart(l.src[l.pos]) || isDigit(l.src[l.pos])) {
			l.pos++
		}
		return token{kind: tName, text: l.src[start:l.pos], pos: start}, nil
	case isDigit(c) || c == '-':
		return l.number()
	case c == '\'':
		return l.str()
	case c == '"':
		return token{}, l.errorf(start, "double-quoted string: use single quotes ('...')")
	case strings.IndexByte("()[],.*", c) >= 0:
		l.pos++
		return token{kind: tPunct, text: l.src[start:l.pos], pos: start}, nil
	case c == '=':
		l.pos++
		return token{kind: tOp, text: "=", pos: start}, nil
	case c == '!' || c == '<' || c == '>':
		l.pos++
		if l.pos < len(l.src) && (l.src[l.pos] == '=' || c == '<' && l.src[l.pos] == '>') {
			l.pos++
		} else if c == '!' {
			return token{}, l.errorf(start, "'!' must be followed by '='")
		}
		return token{kind: tOp, text: l.src[start:l.pos], pos: start}, nil
	}
	return token{}, l.errorf(start, "unexpected character %q", rune(c))
}

// number scans -?digits(.digits)?([eE][+-]?digits)?, the JSON number form.
func (l *lexer) number() (token, error) {
	start := l.pos
	digits := func() int {
		n := 0
		for l.pos < len(l.src) && isDigit(l.src[l.pos]) {
			l.pos++
			n++
		}
		return n
	}
	if l.src[l.pos] == '-' {
		l.pos++
	}
	if digits() == 0 {
		return token{}, l.errorf(start, "'-' must be followed by a digit")
	}
	if l.pos < len(l.src) && l.src[l.pos] == '.' {
		l.pos++
		if digits() == 0 {
			return token{}, l.errorf(l.pos, "expected a digit after the decimal point")
		}
	}
	if l.pos < len(l.src) && (l.src[l.pos] == 'e' || l.src[l.pos] == 'E') {
		l.pos++
		if l.pos < len(l.src) && (l.src[l.pos] == '+' || l.src[l.pos] == '-') {
			l.pos++
		}
		if digits() == 0 {
			return token{}, l.errorf(l.pos, "expected a digit in the exponent")
		}
	}
	text := l.src[start:l.pos]
	if l.pos < len(l.src) && isNameStart(l.src[l.pos]) {
		return token{}, l.errorf(start, "malformed number %q", text+string(l.src[l.pos]))
	}
	n, err := strconv.ParseFloat(text, 64)
	if err != nil {
		return token{}, l.errorf(start, "number %s out of range", text)
	}
	return token{kind: tNumber, text: text, num: n, pos: start}, nil
}

// str scans a single-quoted string in which ” stands for one quote.
func (l *lexer) str() (token, error) {
	start := l.pos
	var b strings.Builder
	l.pos++
	for {
		i := strings.IndexByte(l.src[l.pos:], '\'')
		if i < 0 {
			return token{}, l.errorf(start, "unterminated string")
		}
		b.WriteString(l.src[l.pos : l.pos+i])
		l.pos += i + 1
		if l.pos < len(l.src) && l.src[l.pos] == '\'' {
			b.WriteByte('\'')
			l.pos++
			continue
		}
		return token{kind: tString, text: l.src[start:l.pos], str: b.String(), pos: start}, nil
	}
}
