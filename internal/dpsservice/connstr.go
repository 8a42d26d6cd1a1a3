package dpsservice

import (
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
)

// ErrConnectionString reports a service connection string that cannot be
// used. Its messages name the faulty field, never the key.
var ErrConnectionString = errors.New("bad DPS service connection string")

// ConnectionString is a DPS shared access policy (dps-tpm.md §10):
//
//	HostName=<dps>.azure-devices-provisioning.net;SharedAccessKeyName=<policy>;SharedAccessKey=<base64>
type ConnectionString struct {
	HostName string
	KeyName  string
	Key      []byte
}

// ParseConnectionString parses s. The three fields are required, each once;
// other fields are refused, so that a device or hub connection string given
// by mistake is caught here.
func ParseConnectionString(s string) (ConnectionString, error) {
	var c ConnectionString
	seen := map[string]bool{}
	for part := range strings.SplitSeq(strings.TrimSpace(s), ";") {
		if part == "" {
			continue
		}
		name, value, ok := strings.Cut(part, "=")
		if !ok {
			return ConnectionString{}, fmt.Errorf("%w: a field has no '='", ErrConnectionString)
		}
		name = strings.TrimSpace(name)
		switch name {
		case "HostName", "SharedAccessKeyName", "SharedAccessKey":
		default:
			return ConnectionString{}, fmt.Errorf("%w: unexpected field %q (want HostName, SharedAccessKeyName and SharedAccessKey)", ErrConnectionString, clip(name))
		}
		if seen[name] {
			return ConnectionString{}, fmt.Errorf("%w: %s given twice", ErrConnectionString, name)
		}
		seen[name] = true
		switch name {
		case "HostName":
			if value == "" || strings.ContainsAny(value, "/:@ \t") {
				return ConnectionString{}, fmt.Errorf("%w: HostName %q is not a host name", ErrConnectionString, clip(value))
			}
			c.HostName = value
		case "SharedAccessKeyName":
			if value == "" {
				return ConnectionString{}, fmt.Errorf("%w: SharedAccessKeyName is empty", ErrConnectionString)
			}
			c.KeyName = value
		case "SharedAccessKey":
			key, err := base64.StdEncoding.DecodeString(value)
			if err != nil || len(key) == 0 {
				return ConnectionString{}, fmt.Errorf("%w: SharedAccessKey is not standard base64", ErrConnectionString)
			}
			c.Key = key
		}
	}
	for _, f := range []string{"HostName", "SharedAccessKeyName", "SharedAccessKey"} {
		if !seen[f] {
			return ConnectionString{}, fmt.Errorf("%w: %s missing", ErrConnectionString, f)
		}
	}
	return c, nil
}

// String returns the connection string, key included: treat it as the
// secret it is.
func (c ConnectionString) String() string {
	return "HostName=" + c.HostName + ";SharedAccessKeyName=" + c.KeyName + ";SharedAccessKey=" + base64.StdEncoding.EncodeToString(c.Key)
}

// clip shortens what an error quotes from the input.
func clip(s string) string {
	const max = 64
	if len(s) > max {
		return s[:max] + "…"
	}
	return s
}
