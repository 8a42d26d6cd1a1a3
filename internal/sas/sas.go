// Package sas builds and verifies Azure shared access signature tokens, the
// one implementation used by the device clients (signing inside the TPM or
// with a software key) and by the DPS, IoT Hub and edgeHub emulators.
//
// Token form (docs/dps-protocol.md#registration-sas-token, docs/edge-protocol.md#sas-tokens-for-edgehub):
//
//	SharedAccessSignature sr=<resource>&sig=<signature>&se=<expiry>[&skn=<key name>]
//
// The string to sign is the resource exactly as it appears in the token, a
// newline and the expiry in decimal Unix seconds. Verifiers keep sr raw for
// the HMAC (C# SharedAccessSignature.cs, edgeHub SharedAccessSignature.cs) and
// compare the decoded audience case-insensitively.
package sas

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// MaxClockSkew is how far past its expiry a token is still accepted, as DPS
// and edgeHub do (SharedAccessSignatureConstants.MaxClockSkew).
const MaxClockSkew = 5 * time.Minute

// RegistrationKeyName is the skn of DPS registration tokens.
const RegistrationKeyName = "registration"

const prefix = "SharedAccessSignature "

// Errors a verifier branches on. Their texts never include the token.
var (
	ErrMalformed = errors.New("malformed SAS token")
	ErrExpired   = errors.New("SAS token expired")
	ErrSignature = errors.New("SAS token signature does not match")
	ErrAudience  = errors.New("SAS token audience does not match")
)

// Signer computes HMAC-SHA256 over data with an identity key, inside a TPM or
// in software.
type Signer interface {
	Sign(ctx context.Context, data []byte) ([]byte, error)
}

// Key is a software Signer over a symmetric key (emulators, connection
// strings).
type Key []byte

// Sign returns HMAC-SHA256(k, data).
func (k Key) Sign(_ context.Context, data []byte) ([]byte, error) {
	m := hmac.New(sha256.New, k)
	m.Write(data)
	return m.Sum(nil), nil
}

// DPSResource is the audience of a DPS registration token.
func DPSResource(idScope, registrationID string) string {
	return idScope + "/registrations/" + registrationID
}

// DeviceResource is the audience of an IoT Hub device token.
func DeviceResource(hub, deviceID string) string {
	return hub + "/devices/" + deviceID
}

// ModuleResource is the audience of an IoT Hub module token.
func ModuleResource(hub, deviceID, moduleID string) string {
	return DeviceResource(hub, deviceID) + "/modules/" + moduleID
}

// New returns a token for resource that expires at expiry, signed by s. The
// resource is percent-encoded the way the Node and Python SDKs do it ('/'
// becomes %2F); keyName is left out when empty.
func New(ctx context.Context, s Signer, resource, keyName string, expiry time.Time) (string, error) {
	sr := Escape(resource)
	se := strconv.FormatInt(expiry.Unix(), 10)
	sig, err := s.Sign(ctx, []byte(sr+"\n"+se))
	if err != nil {
		return "", fmt.Errorf("sign SAS token for %s: %w", resource, err)
	}
	var b strings.Builder
	b.WriteString(prefix + "sr=" + sr + "&sig=" + Escape(base64.StdEncoding.EncodeToString(sig)) + "&se=" + se)
	if keyName != "" {
		b.WriteString("&skn=" + Escape(keyName))
	}
	return b.String(), nil
}

// Token is a parsed SAS token.
type Token struct {
	// Resource is sr exactly as it appeared in the token (not decoded): the
	// signature covers these bytes.
	Resource string
	// Expiry is se, in Unix seconds.
	Expiry int64
	// KeyName is the decoded skn, empty when absent.
	KeyName string

	rawExpiry string
	signature []byte
}

// Parse parses a token. It checks the form only; Verify checks the rest.
func Parse(s string) (*Token, error) {
	rest, ok := strings.CutPrefix(s, prefix)
	if !ok {
		return nil, fmt.Errorf("%w: does not start with %q", ErrMalformed, strings.TrimSpace(prefix))
	}
	if strings.ContainsAny(rest, " \t\r\n") {
		return nil, fmt.Errorf("%w: whitespace inside the token", ErrMalformed)
	}
	var t Token
	seen := map[string]bool{}
	for pair := range strings.SplitSeq(rest, "&") {
		name, value, ok := strings.Cut(pair, "=")
		if !ok || name == "" {
			return nil, fmt.Errorf("%w: field without a name or '='", ErrMalformed)
		}
		if seen[name] {
			return nil, fmt.Errorf("%w: field %q given twice", ErrMalformed, name)
		}
		seen[name] = true
		switch name {
		case "sr":
			t.Resource = value
		case "sig":
			// PathUnescape keeps '+' as it is: clients send %2B, and a
			// decoder that turned '+' into a space would break a raw one.
			dec, err := url.PathUnescape(value)
			if err != nil {
				return nil, fmt.Errorf("%w: sig is not percent-encoded correctly", ErrMalformed)
			}
			sig, err := base64.StdEncoding.DecodeString(dec)
			if err != nil || len(sig) == 0 {
				return nil, fmt.Errorf("%w: sig is not base64", ErrMalformed)
			}
			t.signature = sig
		case "se":
			dec, err := url.PathUnescape(value)
			if err != nil {
				return nil, fmt.Errorf("%w: se is not percent-encoded correctly", ErrMalformed)
			}
			se, err := strconv.ParseInt(dec, 10, 64)
			if err != nil || se < 0 {
				return nil, fmt.Errorf("%w: se is not a decimal Unix time", ErrMalformed)
			}
			t.Expiry, t.rawExpiry = se, value
		case "skn":
			dec, err := url.PathUnescape(value)
			if err != nil {
				return nil, fmt.Errorf("%w: skn is not percent-encoded correctly", ErrMalformed)
			}
			t.KeyName = dec
		}
	}
	for _, f := range []string{"sr", "sig", "se"} {
		if !seen[f] {
			return nil, fmt.Errorf("%w: field %q missing", ErrMalformed, f)
		}
	}
	if t.Resource == "" {
		return nil, fmt.Errorf("%w: sr is empty", ErrMalformed)
	}
	return &t, nil
}

// Audience returns the decoded resource.
func (t *Token) Audience() (string, error) {
	a, err := url.PathUnescape(t.Resource)
	if err != nil {
		return "", fmt.Errorf("%w: sr is not percent-encoded correctly", ErrMalformed)
	}
	return a, nil
}

// MatchAudience reports whether the decoded resource equals want, ignoring
// case as DPS and edgeHub do.
func (t *Token) MatchAudience(want string) error {
	a, err := t.Audience()
	if err != nil {
		return err
	}
	if !strings.EqualFold(a, want) {
		return fmt.Errorf("%w: token is for %q, want %q", ErrAudience, a, want)
	}
	return nil
}

// Verify checks that the token has not expired at now (allowing
// MaxClockSkew) and that its signature is HMAC-SHA256(key, sr+"\n"+se) over
// the raw fields. The comparison is constant-time.
func (t *Token) Verify(key []byte, now time.Time) error {
	if now.After(time.Unix(t.Expiry, 0).Add(MaxClockSkew)) {
		return fmt.Errorf("%w at %s", ErrExpired, time.Unix(t.Expiry, 0).UTC().Format(time.RFC3339))
	}
	m := hmac.New(sha256.New, key)
	m.Write([]byte(t.Resource + "\n" + t.rawExpiry))
	if !hmac.Equal(m.Sum(nil), t.signature) {
		return ErrSignature
	}
	return nil
}

// Escape percent-encodes everything but RFC 3986 unreserved characters, like
// encodeURIComponent and Python's quote(s, safe="") (uppercase hex).
func Escape(s string) string {
	const hex = "0123456789ABCDEF"
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_' || c == '.' || c == '~' {
			b.WriteByte(c)
			continue
		}
		b.WriteByte('%')
		b.WriteByte(hex[c>>4])
		b.WriteByte(hex[c&15])
	}
	return b.String()
}
