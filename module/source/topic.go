package source

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"

	"github.com/edgetpm/edgetpm/internal/sas"
)

// match reports whether topic falls under filter (MQTT 3.1.1 §4.7): "+"
// is one level, a final "#" any number including none, a wildcard first
// level does not match a topic starting with "$", and a shared
// subscription ($share/group/filter) matches as its filter.
func match(filter, topic string) bool {
	if rest, ok := strings.CutPrefix(filter, "$share/"); ok {
		_, f, ok := strings.Cut(rest, "/")
		if !ok {
			return false
		}
		filter = f
	}
	if strings.HasPrefix(topic, "$") && (strings.HasPrefix(filter, "+") || strings.HasPrefix(filter, "#")) {
		return false
	}
	fs, ts := strings.Split(filter, "/"), strings.Split(topic, "/")
	for i, f := range fs {
		if f == "#" {
			return i == len(fs)-1 // "#" anywhere else is no filter
		}
		if i >= len(ts) || f != "+" && f != ts[i] {
			return false
		}
	}
	return len(fs) == len(ts)
}

// endpoint is where a source's broker listens.
type endpoint struct {
	addr string // host:port
	tls  bool
}

// parseURL reads tcp:// or mqtt:// (1883 by default), ssl:// or mqtts://
// (TLS, 8883 by default). Credentials in the URL are refused: the
// password belongs in the environment, never in the twin.
func parseURL(raw string) (endpoint, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return endpoint{}, err
	}
	var ep endpoint
	port := "1883"
	switch u.Scheme {
	case "tcp", "mqtt":
	case "ssl", "mqtts":
		ep.tls, port = true, "8883"
	default:
		return endpoint{}, fmt.Errorf("url %q: want tcp://, mqtt://, ssl:// or mqtts://", raw)
	}
	if u.User != nil {
		return endpoint{}, errors.New("url: credentials belong in username and passwordEnv")
	}
	if u.Hostname() == "" || u.Path != "" && u.Path != "/" || u.RawQuery != "" || u.ForceQuery || strings.Contains(raw, "#") {
		return endpoint{}, fmt.Errorf("url %q: want SCHEME://HOST[:PORT]", raw)
	}
	if h, _, _ := strings.Cut(u.Hostname(), "%"); net.ParseIP(h) == nil && !sas.ValidHostName(u.Hostname()) {
		return endpoint{}, fmt.Errorf("url %q: %q is neither a host name nor an IP address", raw, u.Hostname())
	}
	if p := u.Port(); p != "" {
		n, err := strconv.Atoi(p)
		if err != nil || n < 1 || n > 65535 {
			return endpoint{}, fmt.Errorf("url %q: port %s is not 1 to 65535", raw, p)
		}
		port = strconv.Itoa(n)
	}
	ep.addr = net.JoinHostPort(u.Hostname(), port)
	return ep, nil
}
