package workloademu

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"unicode"
	"unicode/utf8"
)

// apiVersions are the versions aziot-edged knows (docs/edge-protocol.md#workload-api,
// edgelet-http/src/version.rs). Every route here accepts all of them.
var apiVersions = map[string]bool{
	"2018-06-28": true,
	"2019-01-30": true,
	"2019-10-22": true,
	"2019-11-05": true,
	"2020-07-07": true,
	"2021-12-07": true,
	"2022-08-03": true,
}

// queryParam returns the last value of name in a raw query, decoded the way
// url::form_urlencoded::parse does it in http-common's make_service! (the
// last api-version wins there too): pairs split on '&' only, '+' is a
// space, bad percent escapes stay as they are, bad UTF-8 becomes U+FFFD.
// net/url differs on ';' and bad escapes, hence this.
func queryParam(rawQuery, name string) (string, bool) {
	var value string
	found := false
	for pair := range strings.SplitSeq(rawQuery, "&") {
		if pair == "" {
			continue
		}
		k, v, _ := strings.Cut(pair, "=")
		if formDecode(k) == name {
			value, found = formDecode(v), true
		}
	}
	return value, found
}

func formDecode(s string) string {
	return strings.ToValidUTF8(string(percentDecode(strings.ReplaceAll(s, "+", " "))), "\uFFFD")
}

// percentDecode decodes %XX escapes and leaves anything else, bad escapes
// included, as it is, like the percent_encoding crate.
func percentDecode(s string) []byte {
	b := make([]byte, 0, len(s))
	for i := 0; i < len(s); i++ {
		if s[i] == '%' && i+2 < len(s) && isHex(s[i+1]) && isHex(s[i+2]) {
			b = append(b, unhex(s[i+1])<<4|unhex(s[i+2]))
			i += 2
			continue
		}
		b = append(b, s[i])
	}
	return b
}

// pathSegment decodes a path segment the way the workload routes decode
// {moduleId}: percent_decode_str(..).decode_utf8(), where bad UTF-8 makes
// the route not match.
func pathSegment(s string) (string, bool) {
	b := percentDecode(s)
	if !utf8.Valid(b) {
		return "", false
	}
	return string(b), true
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func unhex(c byte) byte {
	switch {
	case c <= '9':
		return c - '0'
	case c >= 'a':
		return c - 'a' + 10
	default:
		return c - 'A' + 10
	}
}

// debugQuote quotes s like Rust's {:?} on a str, which http-common uses in
// `invalid api-version {:?}`: printable characters as they are, quotes and
// backslashes escaped, control characters as \u{..}.
func debugQuote(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for _, r := range s {
		switch r {
		case '"', '\\':
			b.WriteByte('\\')
			b.WriteRune(r)
		case '\t':
			b.WriteString(`\t`)
		case '\r':
			b.WriteString(`\r`)
		case '\n':
			b.WriteString(`\n`)
		case 0:
			b.WriteString(`\0`)
		default:
			if unicode.IsPrint(r) || r == ' ' {
				b.WriteRune(r)
			} else {
				fmt.Fprintf(&b, `\u{%x}`, r)
			}
		}
	}
	b.WriteByte('"')
	return b.String()
}

// isJSON reports whether a request with this Content-Type has its body
// parsed: http-common parses when the header is absent (or not visible
// ASCII, which hyper's to_str rejects) or its media type is exactly
// application/json; any other type makes the body count as absent
// (docs/edge-protocol.md#workload-api).
func isJSON(contentType []string) bool {
	if len(contentType) == 0 {
		return true
	}
	v := contentType[0]
	for i := 0; i < len(v); i++ {
		if c := v[i]; c != '\t' && (c < 0x20 || c > 0x7e) {
			return true
		}
	}
	mt, _, _ := strings.Cut(v, ";")
	return strings.TrimSpace(mt) == "application/json"
}

// errJSON is a body that does not deserialize (422); its text plays the
// part of serde_json's message.
type errJSON struct{ msg string }

func (e *errJSON) Error() string { return e.msg }

// validJSON is serde's IgnoredAny: any one JSON value, nothing after it.
func validJSON(body []byte) error {
	if !utf8.Valid(body) {
		return &errJSON{"invalid unicode code point"}
	}
	if !json.Valid(body) {
		return &errJSON{"expected value"}
	}
	return nil
}

// decodeStruct deserializes body into the string fields of a serde struct
// named name, as serde_json does for #[derive(Deserialize)] without
// deny_unknown_fields: an object with exact (case-sensitive) keys, unknown
// keys ignored, a field given twice or missing an error; or an array
// holding the fields in order. Only string fields are needed here.
func decodeStruct(body []byte, name string, fields ...string) (map[string]string, error) {
	if err := validJSON(body); err != nil {
		return nil, err
	}
	body = bytes.TrimSpace(body)
	out := make(map[string]string, len(fields))
	switch {
	case len(body) > 0 && body[0] == '{':
		// The body is valid JSON: the decoder cannot fail on it.
		dec := json.NewDecoder(bytes.NewReader(body))
		dec.Token() // '{'
		for dec.More() {
			t, _ := dec.Token()
			var raw json.RawMessage
			if err := dec.Decode(&raw); err != nil {
				return nil, &errJSON{err.Error()}
			}
			key := t.(string)
			if !slices.Contains(fields, key) {
				continue
			}
			if _, dup := out[key]; dup {
				return nil, &errJSON{fmt.Sprintf("duplicate field `%s`", key)}
			}
			s, err := jsonString(raw)
			if err != nil {
				return nil, err
			}
			out[key] = s
		}
		for _, f := range fields {
			if _, ok := out[f]; !ok {
				return nil, &errJSON{fmt.Sprintf("missing field `%s`", f)}
			}
		}
		return out, nil
	case len(body) > 0 && body[0] == '[':
		var arr []json.RawMessage
		if err := json.Unmarshal(body, &arr); err != nil {
			return nil, &errJSON{err.Error()}
		}
		if len(arr) < len(fields) {
			return nil, &errJSON{fmt.Sprintf("invalid length %d, expected struct %s with %d elements", len(arr), name, len(fields))}
		}
		if len(arr) > len(fields) {
			return nil, &errJSON{"trailing characters"}
		}
		for i, f := range fields {
			s, err := jsonString(arr[i])
			if err != nil {
				return nil, err
			}
			out[f] = s
		}
		return out, nil
	default:
		return nil, &errJSON{fmt.Sprintf("invalid type: %s, expected struct %s", jsonKind(body), name)}
	}
}

// jsonString is serde's String: a JSON string and nothing else (null
// included, which encoding/json would quietly accept).
func jsonString(raw json.RawMessage) (string, error) {
	if len(raw) == 0 || raw[0] != '"' {
		return "", &errJSON{fmt.Sprintf("invalid type: %s, expected a string", jsonKind(raw))}
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return "", &errJSON{err.Error()}
	}
	return s, nil
}

func jsonKind(raw []byte) string {
	switch {
	case len(raw) == 0:
		return "nothing"
	case raw[0] == '"':
		return "string"
	case raw[0] == '{':
		return "map"
	case raw[0] == '[':
		return "sequence"
	case raw[0] == 't' || raw[0] == 'f':
		return "boolean `" + string(raw) + "`"
	case raw[0] == 'n':
		return "null"
	default:
		return "number `" + string(raw) + "`"
	}
}

// maxBody bounds a request body; the real server has no limit, but none
// of its bodies is more than a few hundred bytes.
const maxBody = 1 << 20

// readBody reads the whole body; errors that are a timeout are reported
// as such (http-common answers 408 after 5 s).
func readBody(r io.Reader) ([]byte, error) {
	b, err := io.ReadAll(io.LimitReader(r, maxBody+1))
	if err != nil {
		return nil, err
	}
	if len(b) > maxBody {
		return nil, errors.New("request body too large")
	}
	return b, nil
}
