package edgeconfig

import (
	"bytes"
	"fmt"
	"slices"

	"github.com/pelletier/go-toml/v2/unstable"
)

// secretKeys are the keys of aziot's config.toml whose values, and
// everything below them, are secrets: the TPM hierarchy passwords, a
// manual connection string, and inline SAS and symmetric keys
// (docs/edge-protocol.md#host-provisioning-file).
var secretKeys = []string{"hierarchy_authorization", "connection_string", "device_id_pk", "symmetric_key", "password"}

// isSecret reports whether a value at path is a secret.
func isSecret(path []string) bool {
	return slices.ContainsFunc(path, func(k string) bool { return slices.Contains(secretKeys, k) })
}

// unparsable stands for a side of a diff that is not TOML: without a parse
// its secrets cannot be found, so none of it is shown.
const unparsable = "# (not valid TOML: not shown, as it may hold secrets)\n"

// redactor replaces every secret value of the documents it is given with a
// placeholder; the same token gets the same placeholder in both, so a
// changed secret is still a change.
type redactor struct {
	ids map[string]int // raw token -> its number
}

// redact returns data with every scalar below a secret key replaced, in
// whatever TOML form it is written (basic, literal, multi-line strings,
// numbers, ...; under any table header, dotted or quoted key, inline table
// or array), by "<redacted N>". The document is parsed, not matched line by
// line: a multi-line string or a quoted key cannot slip through.
func (r *redactor) redact(data []byte) string {
	var (
		p       unstable.Parser
		section []string
		tokens  []unstable.Range
	)
	p.Reset(data)
	for p.NextExpression() {
		n := p.Expression()
		switch n.Kind {
		case unstable.Table, unstable.ArrayTable:
			section, _, _ = keyPath(n.Key())
		case unstable.KeyValue:
			key, _, _ := keyPath(n.Key())
			tokens = secretTokens(n.Value(), append(slices.Clone(section), key...), tokens)
		}
	}
	if p.Error() != nil {
		return unparsable
	}
	slices.SortFunc(tokens, func(a, b unstable.Range) int { return int(a.Offset) - int(b.Offset) })
	var out bytes.Buffer
	last := 0
	for _, t := range tokens {
		start, end := int(t.Offset), int(t.Offset+t.Length)
		if start < last || end > len(data) {
			return unparsable // cannot happen with a parsed document
		}
		out.Write(data[last:start])
		raw := string(data[start:end])
		id, ok := r.ids[raw]
		if !ok {
			id = len(r.ids) + 1
			r.ids[raw] = id
		}
		fmt.Fprintf(&out, `"<redacted %d>"`, id)
		last = end
	}
	out.Write(data[last:])
	return out.String()
}

// secretTokens appends the ranges of the scalars in n, at path, that are
// secrets.
func secretTokens(n *unstable.Node, path []string, tokens []unstable.Range) []unstable.Range {
	switch n.Kind {
	case unstable.InlineTable:
		for it := n.Children(); it.Next(); {
			kv := it.Node()
			key, _, _ := keyPath(kv.Key())
			tokens = secretTokens(kv.Value(), append(slices.Clone(path), key...), tokens)
		}
	case unstable.Array:
		for it := n.Children(); it.Next(); {
			tokens = secretTokens(it.Node(), path, tokens)
		}
	case unstable.Comment:
	default:
		if isSecret(path) && n.Raw.Length > 0 {
			tokens = append(tokens, n.Raw)
		}
	}
	return tokens
}
