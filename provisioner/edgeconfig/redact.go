package edgeconfig

import (
	"bytes"
	"fmt"
	"regexp"
	"slices"
	"strings"

	"github.com/pelletier/go-toml/v2"
	"github.com/pelletier/go-toml/v2/unstable"
)

// secretKeys are the keys of aziot's config.toml whose values, and
// everything below them, are secrets: the TPM hierarchy passwords, a
// manual connection string, and inline SAS and symmetric keys
// (docs/edge-protocol.md#host-provisioning-file).
var secretKeys = []string{"hierarchy_authorization", "connection_string", "device_id_pk", "symmetric_key", "password"}

// secretWords in a key's name, in any case, say its value is a secret
// wherever it is: [agent.env] variables, registry and EST credentials.
var secretWords = []string{"password", "passwd", "secret", "token", "credential"}

// secretContent is what a secret looks like inside a value or a comment
// whatever its key: a connection string's key (SharedAccessKey=,
// AccountKey=, Password=), a SAS token or a SAS URL's sig=, a PKCS#11
// URI's pin-value=, a URL with a password.
var secretContent = regexp.MustCompile(`(?i)sharedaccesskey\s*=|sharedaccesssignature|accountkey\s*=|password\s*=|pwd\s*=|pin-value=|(^|[?&;\s])sig=|://[^/@\s:]*:[^/@\s]*@`)

// isSecret reports whether a value at path is a secret.
func isSecret(path []string) bool {
	return slices.ContainsFunc(path, func(k string) bool {
		if slices.Contains(secretKeys, k) {
			return true
		}
		k = strings.ToLower(k)
		return strings.HasSuffix(k, "key") || slices.ContainsFunc(secretWords, func(w string) bool { return strings.Contains(k, w) })
	})
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

// token is the range of a secret in a document; a comment is replaced
// whole.
type token struct {
	unstable.Range
	comment bool
}

// redact returns data with every scalar below a secret key replaced, in
// whatever TOML form it is written (basic, literal, multi-line strings,
// numbers, ...; under any table header, dotted or quoted key, inline table
// or array), by "<redacted N>"; so is every string and comment that
// looks like a secret (secretContent) wherever it is. The document is
// parsed, not matched line by line: a multi-line string or a quoted key
// cannot slip through.
func (r *redactor) redact(data []byte) string {
	var (
		p       unstable.Parser
		section []string
		tokens  []token
	)
	p.KeepComments = true
	p.Reset(data)
	for p.NextExpression() {
		n := p.Expression()
		switch n.Kind {
		case unstable.Comment:
			tokens = secretTokens(n, nil, tokens)
		case unstable.Table, unstable.ArrayTable:
			section, _, _ = keyPath(n.Key())
		case unstable.KeyValue:
			key, _, _ := keyPath(n.Key())
			tokens = secretTokens(n.Value(), append(slices.Clone(section), key...), tokens)
		}
		if c := n.Next(); c != nil && c.Kind == unstable.Comment {
			tokens = secretTokens(c, nil, tokens) // at the end of the line
		}
	}
	if p.Error() != nil {
		return unparsable
	}
	// The parser checks syntax only: a duplicate key, which aziot refuses
	// too, makes a file no more shown than a syntax error does.
	var decoded map[string]any
	if toml.Unmarshal(data, &decoded) != nil {
		return unparsable
	}
	slices.SortFunc(tokens, func(a, b token) int { return int(a.Offset) - int(b.Offset) })
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
		if t.comment {
			fmt.Fprintf(&out, "# <redacted %d>", id)
		} else {
			fmt.Fprintf(&out, `"<redacted %d>"`, id)
		}
		last = end
	}
	out.Write(data[last:])
	return out.String()
}

// secretTokens appends the ranges of the scalars and comments in n, at
// path, that are secrets.
func secretTokens(n *unstable.Node, path []string, tokens []token) []token {
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
		if secretContent.Match(n.Data) {
			tokens = append(tokens, token{n.Raw, true})
		}
	default:
		if n.Raw.Length > 0 && (isSecret(path) || n.Kind == unstable.String && secretContent.Match(n.Data)) {
			tokens = append(tokens, token{Range: n.Raw})
		}
	}
	return tokens
}
