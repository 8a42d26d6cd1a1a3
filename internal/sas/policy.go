package sas

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"time"
)

// ErrPolicy reports a service connection string that cannot be used. Its
// messages name the faulty field, never the key.
var ErrPolicy = errors.New("bad service connection string")

// Policy is a service's shared access policy, as its connection string
// gives it, for DPS (docs/dps-protocol.md#service-api) and IoT Hub (docs/edge-protocol.md#iot-hub-service-api)
// alike:
//
//	HostName=<host>;SharedAccessKeyName=<policy>;SharedAccessKey=<base64>
type Policy struct {
	HostName string
	KeyName  string
	Key      []byte
}

// ParsePolicy parses a connection string. The three fields are required,
// each once; other fields are refused, so that a device or module
// connection string given by mistake is caught here.
func ParsePolicy(s string) (Policy, error) {
	// Errors name fields by position, never quote the input: a key given
	// where a connection string belongs must not end up on the screen.
	var c Policy
	seen := map[string]bool{}
	i := 0
	for part := range strings.SplitSeq(strings.TrimSpace(s), ";") {
		if part == "" {
			continue
		}
		i++
		name, value, ok := strings.Cut(part, "=")
		if !ok {
			return Policy{}, fmt.Errorf("%w: field %d has no '='", ErrPolicy, i)
		}
		name = strings.TrimSpace(name)
		switch name {
		case "HostName", "SharedAccessKeyName", "SharedAccessKey":
		case "DeviceId", "ModuleId", "GatewayHostName":
			return Policy{}, fmt.Errorf("%w: it has %s: a device or module connection string, not a shared access policy's", ErrPolicy, name)
		default:
			return Policy{}, fmt.Errorf("%w: field %d is not HostName, SharedAccessKeyName or SharedAccessKey", ErrPolicy, i)
		}
		if seen[name] {
			return Policy{}, fmt.Errorf("%w: %s given twice", ErrPolicy, name)
		}
		seen[name] = true
		switch name {
		case "HostName":
			if !ValidDNSName(value) {
				return Policy{}, fmt.Errorf("%w: HostName is not a DNS name (dot-separated labels of letters, digits and '-')", ErrPolicy)
			}
			c.HostName = value
		case "SharedAccessKeyName":
			if value == "" {
				return Policy{}, fmt.Errorf("%w: SharedAccessKeyName is empty", ErrPolicy)
			}
			c.KeyName = value
		case "SharedAccessKey":
			key, err := base64.StdEncoding.DecodeString(value)
			if err != nil || len(key) == 0 {
				return Policy{}, fmt.Errorf("%w: SharedAccessKey is not standard base64", ErrPolicy)
			}
			c.Key = key
		}
	}
	for _, f := range []string{"HostName", "SharedAccessKeyName", "SharedAccessKey"} {
		if !seen[f] {
			return Policy{}, fmt.Errorf("%w: %s missing", ErrPolicy, f)
		}
	}
	return c, nil
}

// ConnectionString returns the connection string, key included: treat it
// as the secret it is.
func (c Policy) ConnectionString() string {
	return "HostName=" + c.HostName + ";SharedAccessKeyName=" + c.KeyName + ";SharedAccessKey=" + base64.StdEncoding.EncodeToString(c.Key)
}

// String is the connection string with the key redacted, so that printing
// a Policy, or a struct holding one, shows no secret.
func (c Policy) String() string {
	return "HostName=" + c.HostName + ";SharedAccessKeyName=" + c.KeyName + ";SharedAccessKey=<redacted>"
}

// Token returns a service token for the policy's host, signed with its key,
// that expires at expiry.
func (c Policy) Token(ctx context.Context, expiry time.Time) (string, error) {
	return New(ctx, Key(c.Key), c.HostName, c.KeyName, expiry)
}
