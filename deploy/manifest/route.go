package manifest

import (
	"errors"
	"fmt"
	"strings"
)

// Route is an edgeHub route: FROM <Source> [WHERE <Condition>] INTO <Sink>
// (docs/edge-protocol.md#deployments).
type Route struct {
	Source    string // e.g. /messages/modules/relay/outputs/*
	Condition string // an IoT Hub routing query; empty when there is no WHERE
	Sink      string // $upstream or BrokeredEndpoint("/modules/<m>/inputs/<i>")
}

// ParseRoute parses and checks an edgeHub route. Keywords are matched
// without regard to case, as edgeHub's grammar does; sources and sinks
// must be one of the forms edgeHub's EndpointFactory knows.
func ParseRoute(s string) (Route, error) {
	r, err := parseRoute(s)
	if err != nil {
		return Route{}, fmt.Errorf("route %q: %w", s, err)
	}
	return r, nil
}

// errRouteSyntax is the shape every route must have.
var errRouteSyntax = errors.New("want FROM <source> [WHERE <condition>] INTO <sink>")

func parseRoute(s string) (Route, error) {
	rest, ok := cutKeyword(strings.TrimSpace(s), "FROM")
	if !ok {
		return Route{}, errRouteSyntax
	}
	i := strings.IndexAny(rest, spaces)
	if i < 0 {
		return Route{}, errRouteSyntax
	}
	r := Route{Source: rest[:i]}
	rest = strings.TrimLeft(rest[i:], spaces)
	if cond, ok := cutKeyword(rest, "WHERE"); ok {
		// The sink never holds spaces, so the last INTO ends the condition
		// even when a string in the condition says INTO.
		j := lastKeyword(cond, "INTO")
		if j < 0 {
			return Route{}, errRouteSyntax
		}
		r.Condition = strings.TrimSpace(cond[:j])
		rest = cond[j:]
	}
	sink, ok := cutKeyword(rest, "INTO")
	if !ok {
		return Route{}, errRouteSyntax
	}
	r.Sink = strings.TrimSpace(sink)
	if !validSource(r.Source) {
		return Route{}, fmt.Errorf("source %q: want /*, /twinChangeNotifications, /messages/*, /messages/modules/*, /messages/modules/<m>/*, /messages/modules/<m>/outputs/* or /messages/modules/<m>/outputs/<o>", r.Source)
	}
	if err := checkCondition(r.Condition); err != nil {
		return Route{}, err
	}
	if !validSink(r.Sink) {
		return Route{}, fmt.Errorf(`sink %q: want $upstream or BrokeredEndpoint("/modules/<m>/inputs/<i>")`, r.Sink)
	}
	return r, nil
}

const spaces = " \t\r\n"

func isSpace(b byte) bool { return strings.IndexByte(spaces, b) >= 0 }

// cutKeyword removes the keyword kw and the spaces after it from the
// start of s.
func cutKeyword(s, kw string) (string, bool) {
	if len(s) <= len(kw) || !asciiFold(s[:len(kw)], kw) || !isSpace(s[len(kw)]) {
		return "", false
	}
	return strings.TrimLeft(s[len(kw):], spaces), true
}

// lastKeyword returns the index of the last kw in s that has a space on
// both sides, or -1.
func lastKeyword(s, kw string) int {
	for i := len(s) - len(kw) - 1; i >= 1; i-- {
		if isSpace(s[i-1]) && isSpace(s[i+len(kw)]) && asciiFold(s[i:i+len(kw)], kw) {
			return i
		}
	}
	return -1
}

// asciiFold is strings.EqualFold for ASCII only: no other letter may
// stand for a keyword.
func asciiFold(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range len(a) {
		x, y := a[i], b[i]
		if 'a' <= x && x <= 'z' {
			x -= 'a' - 'A'
		}
		if 'a' <= y && y <= 'z' {
			y -= 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}

func validSource(s string) bool {
	switch s {
	case "/*", "/twinChangeNotifications", "/messages/*", "/messages/modules/*":
		return true
	}
	rest, ok := strings.CutPrefix(s, "/messages/modules/")
	if !ok {
		return false
	}
	parts := strings.Split(rest, "/")
	if !validModuleName(parts[0]) {
		return false
	}
	switch {
	case len(parts) == 2:
		return parts[1] == "*"
	case len(parts) == 3 && parts[1] == "outputs":
		return parts[2] == "*" || validEndpointName(parts[2])
	}
	return false
}

func validSink(s string) bool {
	if s == "$upstream" {
		return true
	}
	path, ok := strings.CutPrefix(s, `BrokeredEndpoint("`)
	if !ok {
		return false
	}
	path, ok = strings.CutSuffix(path, `")`)
	if !ok {
		return false
	}
	parts := strings.Split(path, "/")
	return len(parts) == 5 && parts[0] == "" && parts[1] == "modules" && validModuleName(parts[2]) &&
		parts[3] == "inputs" && validEndpointName(parts[4])
}

// validEndpointName accepts an output or input name: one path segment
// without wildcards, quotes or spaces.
func validEndpointName(s string) bool {
	return s != "" && !strings.ContainsAny(s, "/*\"'"+spaces)
}

// checkCondition catches the mistakes IoT Hub's query parser rejects
// first: unbalanced parentheses and unterminated strings. Anything more is
// left to edgeHub.
func checkCondition(c string) error {
	depth := 0
	quoted := false
	for i := range len(c) {
		switch {
		case c[i] == '\'':
			quoted = !quoted
		case quoted:
		case c[i] == '(':
			depth++
		case c[i] == ')':
			depth--
			if depth < 0 {
				return fmt.Errorf("condition %q: unbalanced parentheses", c)
			}
		}
	}
	if quoted {
		return fmt.Errorf("condition %q: unterminated string", c)
	}
	if depth != 0 {
		return fmt.Errorf("condition %q: unbalanced parentheses", c)
	}
	return nil
}
