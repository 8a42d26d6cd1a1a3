package edgeconfig

import (
	"bytes"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/pelletier/go-toml/v2/unstable"
)

// An expr is one top-level expression of a file, a table header or a
// key/value, with the whole lines it spans.
type expr struct {
	header     bool
	section    []string // the table a key/value is written in
	path       []string // the full key path
	start, end int      // from the start of its first line to after its last newline
	remove     bool
}

// An edit replaces data[start:end] with text. An insertion (start == end,
// always at a line start or at the end) that opens a block gets a blank line
// before and after it.
type edit struct {
	start, end int
	text       string
	block      bool
}

// setDPS returns data with the settings of s, edited as text:
//   - a key s sets that the file holds gets its value replaced in place,
//     unless the file already spells that value another way (0x100 for
//     0x00_01_00, a literal string);
//   - any other key or table under provisioning and tpm is removed, whole
//     lines, inline tables included, since aziot would read it as part of
//     another way to provision;
//   - missing keys go after the last key of their table, written relative
//     to the same table, or under the table's header; missing tables go in
//     a new block after their parent's section or at the end; missing
//     top-level keys go above the first table header and its comments.
func setDPS(data []byte, s DPS) ([]byte, error) {
	tables := s.tables()
	eol := "\n"
	if bytes.Contains(data, []byte("\r\n")) {
		eol = "\r\n"
	}
	var (
		exprs       []expr
		edits       []edit
		found       = map[*leaf]bool{}
		section     []string
		dropSection bool
		arrays      [][]string // managed arrays of tables
		p           unstable.Parser
	)
	p.Reset(data)
	for p.NextExpression() {
		n := p.Expression()
		switch n.Kind {
		case unstable.Table, unstable.ArrayTable:
			path, start, _ := keyPath(n.Key())
			section = path
			// An array of tables is no shape aziot reads provisioning or tpm
			// in; [tpm.x] below [[tpm]] is part of the array.
			if managed(path) && n.Kind == unstable.ArrayTable {
				arrays = append(arrays, path)
			}
			dropSection = managed(path) && (!hasTable(tables, path) ||
				slices.ContainsFunc(arrays, func(a []string) bool { return hasPrefix(path, a) }))
			exprs = append(exprs, expr{header: true, path: path,
				start: lineStart(data, start), end: lineEnd(data, start), remove: dropSection})
		case unstable.KeyValue:
			key, start, keyEnd := keyPath(n.Key())
			e := expr{section: section, path: append(slices.Clone(section), key...),
				start: lineStart(data, start), end: lineEnd(data, int(n.Raw.Offset+n.Raw.Length))}
			l := findLeaf(tables, e.path)
			switch {
			case dropSection:
				e.remove = true
			case l != nil:
				found[l] = true
				if !l.same(n.Value()) {
					// The value runs from after "=" to the end of the expression;
					// a trailing comment stays.
					vs := keyEnd + bytes.IndexByte(data[keyEnd:], '=') + 1
					for data[vs] == ' ' || data[vs] == '\t' {
						vs++
					}
					edits = append(edits, edit{start: vs, end: int(n.Raw.Offset + n.Raw.Length), text: l.text})
				}
			case managed(e.path):
				e.remove = true
			}
			exprs = append(exprs, e)
		}
	}
	if err := p.Error(); err != nil {
		return nil, fmt.Errorf("parse: %w", err)
	}

	for i, e := range exprs {
		if !e.remove {
			continue
		}
		start := e.start
		if e.header {
			// The blank lines that set the table apart go with it.
			start = linesAbove(data, prevEnd(exprs, i), start, func(line []byte) bool { return len(line) == 0 })
		}
		edits = append(edits, edit{start: start, end: e.end})
	}
	for _, t := range tables {
		var missing []leaf
		for i := range t.leaves {
			if !found[&t.leaves[i]] {
				missing = append(missing, t.leaves[i])
			}
		}
		if len(missing) > 0 {
			edits = append(edits, place(data, exprs, t.path, missing, eol))
		}
	}
	return render(data, edits, eol), nil
}

// place returns the insertion of the missing keys of the table at path.
func place(data []byte, exprs []expr, path []string, missing []leaf, eol string) edit {
	keys := func(prefix []string) string {
		var b strings.Builder
		for _, l := range missing {
			b.WriteString(strings.Join(append(slices.Clone(prefix), l.name), ".") + " = " + l.text + eol)
		}
		return b.String()
	}
	// After the table's last key, written from the same table: a header
	// [path] added below a dotted key that made the table would be invalid.
	for i := len(exprs) - 1; i >= 0; i-- {
		e := exprs[i]
		if !e.remove && !e.header && len(e.path) > len(path) && hasPrefix(e.path, path) && len(e.section) <= len(path) {
			return edit{start: e.end, end: e.end, text: keys(path[len(e.section):])}
		}
	}
	if end, ok := sectionEnd(exprs, path); ok {
		return edit{start: end, end: end, text: keys(nil)}
	}
	at := len(data)
	if len(path) == 0 {
		for i, e := range exprs {
			if e.header && !e.remove {
				at = linesAbove(data, prevEnd(exprs, i), e.start, func(line []byte) bool { return len(line) > 0 && line[0] == '#' })
				break
			}
		}
		return edit{start: at, end: at, text: keys(nil), block: true}
	}
	if end, ok := sectionEnd(exprs, path[:len(path)-1]); ok {
		at = end
	}
	return edit{start: at, end: at, text: "[" + strings.Join(path, ".") + "]" + eol + keys(nil), block: true}
}

// render applies edits to data.
func render(data []byte, edits []edit, eol string) []byte {
	// Where edits start at the same place, keys that continue the section
	// above go first, then new blocks, then removals.
	sort.SliceStable(edits, func(i, j int) bool {
		a, b := edits[i], edits[j]
		if a.start != b.start {
			return a.start < b.start
		}
		if a.end != b.end {
			return a.end < b.end
		}
		return !a.block && b.block
	})
	var out []byte
	pos := 0
	blank := false // a block was written and wants a blank line after it
	emit := func(b []byte) {
		if len(b) == 0 {
			return
		}
		if blank && !bytes.HasPrefix(b, []byte("\n")) && !bytes.HasPrefix(b, []byte("\r\n")) {
			out = append(out, eol...)
		}
		blank = false
		out = append(out, b...)
	}
	for _, e := range edits {
		emit(data[pos:e.start])
		pos = e.end
		if e.start == e.end {
			if len(out) > 0 && out[len(out)-1] != '\n' {
				out = append(out, eol...) // a file without a final newline
			}
			if e.block {
				blank = false
				if !endsBlank(out) {
					out = append(out, eol...)
				}
			}
		}
		emit([]byte(e.text))
		blank = blank || e.block
	}
	emit(data[pos:])
	return out
}

// endsBlank reports whether out is empty or ends with a blank line.
func endsBlank(out []byte) bool {
	if len(out) == 0 {
		return true
	}
	b, ok := bytes.CutSuffix(out, []byte("\n"))
	b = bytes.TrimSuffix(b, []byte("\r"))
	return ok && (len(b) == 0 || b[len(b)-1] == '\n')
}

// sectionEnd returns the end of the last kept expression of the section of
// the kept header [path].
func sectionEnd(exprs []expr, path []string) (end int, ok bool) {
	in := false
	for _, e := range exprs {
		switch {
		case e.header:
			in = !e.remove && slices.Equal(e.path, path)
			if in {
				end, ok = e.end, true
			}
		case in && !e.remove:
			end = e.end
		}
	}
	return end, ok
}

// prevEnd returns where the expression before exprs[i] ends.
func prevEnd(exprs []expr, i int) int {
	if i == 0 {
		return 0
	}
	return exprs[i-1].end
}

// linesAbove returns the start of the run of lines ending at hi, not
// reaching above lo, whose trimmed content all match.
func linesAbove(data []byte, lo, hi int, match func(line []byte) bool) int {
	for hi > lo {
		ls := lineStart(data, hi-1)
		if !match(bytes.TrimSpace(data[ls:hi])) {
			break
		}
		hi = ls
	}
	return hi
}

func lineStart(data []byte, off int) int { return bytes.LastIndexByte(data[:off], '\n') + 1 }

func lineEnd(data []byte, off int) int {
	if i := bytes.IndexByte(data[off:], '\n'); i >= 0 {
		return off + i + 1
	}
	return len(data)
}

// keyPath returns the parts of a key and where it starts and ends.
func keyPath(it unstable.Iterator) (path []string, start, end int) {
	for it.Next() {
		k := it.Node()
		if path == nil {
			start = int(k.Raw.Offset)
		}
		path = append(path, string(k.Data))
		end = int(k.Raw.Offset + k.Raw.Length)
	}
	return path, start, end
}

// managed reports whether path is in a table this package owns.
func managed(path []string) bool {
	return len(path) > 0 && (path[0] == "provisioning" || path[0] == "tpm")
}

func hasPrefix(path, prefix []string) bool {
	return len(path) >= len(prefix) && slices.Equal(path[:len(prefix)], prefix)
}

func hasTable(tables []table, path []string) bool {
	return slices.ContainsFunc(tables, func(t table) bool { return len(t.path) > 0 && slices.Equal(t.path, path) })
}

func findLeaf(tables []table, path []string) *leaf {
	for _, t := range tables {
		if len(path) == len(t.path)+1 && hasPrefix(path, t.path) {
			for i := range t.leaves {
				if t.leaves[i].name == path[len(path)-1] {
					return &t.leaves[i]
				}
			}
		}
	}
	return nil
}

// same reports whether n already holds l's value.
func (l *leaf) same(n *unstable.Node) bool {
	switch v := l.v.(type) {
	case string:
		return n.Kind == unstable.String && string(n.Data) == v
	case int64:
		// Go's base-0 syntax covers TOML's integers: 0x, 0o, 0b and "_".
		i, err := strconv.ParseInt(string(n.Data), 0, 64)
		return n.Kind == unstable.Integer && err == nil && i == v
	}
	return false
}
