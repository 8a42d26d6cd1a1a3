package source

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
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
			return true
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
	if u.Hostname() == "" || u.Path != "" && u.Path != "/" || u.RawQuery != "" {
		return endpoint{}, fmt.Errorf("url %q: want SCHEME://HOST[:PORT]", raw)
	}
	if p := u.Port(); p != "" {
		port = p
	}
	ep.addr = net.JoinHostPort(u.Hostname(), port)
	return ep, nil
}
