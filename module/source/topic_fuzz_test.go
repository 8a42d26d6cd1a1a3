package source

import (
	"net"
	"net/url"
	"strconv"
	"strings"
	"testing"
)

var matchSeeds = []struct{ filter, topic string }{
	{"a/b", "a/b"}, {"a/+", "a/b/c"}, {"a/+/c", "a//c"}, {"+/+", "/x"}, {"a/#", "a"}, {"#", "$SYS/broker"},
	{"+/broker", "$SYS/broker"}, {"$SYS/#", "$SYS/broker/load"}, {"$share/g/a/+", "a/b"}, {"$share/g", "g"},
}

// A "#" that is not the last level makes an invalid filter (MQTT 3.1.1
// §4.7.1.2), which matches nothing rather than everything.
func TestMatchInvalidFilter(t *testing.T) {
	for _, tc := range []struct{ filter, topic string }{{"#/", "a"}, {"a/#/c", "a/b/c"}, {"#/#", "a/b"}} {
		if match(tc.filter, tc.topic) {
			t.Errorf("match(%q, %q) = true, want false", tc.filter, tc.topic)
		}
	}
}

// FuzzMatch checks match against what MQTT 3.1.1 §4.7 says of any topic:
// it matches itself, "#", and itself with any level replaced by "+", and
// a filter that does not match it does not match it longer either.
func FuzzMatch(f *testing.F) {
	for _, s := range matchSeeds {
		f.Add(s.filter, s.topic, uint8(0))
	}
	f.Fuzz(func(t *testing.T, filter, topic string, level uint8) {
		match(filter, topic) // never panics, whatever the filter
		if topic == "" || strings.ContainsAny(topic, "+#") || strings.HasPrefix(topic, "$share/") {
			return
		}
		if !match(topic, topic) {
			t.Fatalf("match(%q, %q) = false, a topic must match itself", topic, topic)
		}
		sys := strings.HasPrefix(topic, "$")
		if match("#", topic) == sys {
			t.Fatalf("match(\"#\", %q) = %v", topic, !sys)
		}
		levels := strings.Split(topic, "/")
		i := int(level) % len(levels)
		plus := append([]string(nil), levels...)
		plus[i] = "+"
		if want := i > 0 || !sys; match(strings.Join(plus, "/"), topic) != want {
			t.Fatalf("match(%q, %q) = %v, want %v", strings.Join(plus, "/"), topic, !want, want)
		}
		hash := strings.Join(append(append([]string(nil), levels[:i]...), "#"), "/")
		if want := i > 0 || !sys; match(hash, topic) != want {
			t.Fatalf("match(%q, %q) = %v, want %v", hash, topic, !want, want)
		}
		if match(filter, topic) && !strings.HasSuffix(filter, "#") && !strings.HasPrefix(filter, "$share/") && match(filter, topic+"/x") {
			t.Fatalf("match(%q, %q/x) = true: a filter without # matches a fixed number of levels", filter, topic)
		}
	})
}

// What url.Parse lets through but is no broker address is refused, not
// dialled or silently cut.
func TestParseURLRefusesWhatIsNoAddress(t *testing.T) {
	for _, raw := range []string{"tcp://broker#1883", "tcp://broker:1883?", "tcp://broker:0", "tcp://broker:99999", "ssl://]", "tcp://h;x:1883", "tcp://h!x"} {
		if ep, err := parseURL(raw); err == nil {
			t.Errorf("parseURL(%q) = %+v, want an error", raw, ep)
		}
	}
	if ep, err := parseURL("tcp://broker:01884"); err != nil || ep.addr != "broker:1884" {
		t.Errorf("parseURL(port with a leading zero) = %+v, %v; want broker:1884", ep, err)
	}
	if ep, err := parseURL("tcp://[fe80::1%25eth0]:1883"); err != nil || ep.addr != "[fe80::1%eth0]:1883" {
		t.Errorf("parseURL(IPv6 with a zone) = %+v, %v", ep, err)
	}
}

var urlSeeds = []string{
	"tcp://broker", "mqtt://10.0.0.5:1884", "ssl://broker", "mqtts://[::1]:8884/", "ws://broker", "broker:1883",
	"mqtt://user:pw@broker", "mqtt://broker/path", "mqtt://", "tcp://[fe80::1%25eth0]:1883",
}

// FuzzParseURL checks that what parseURL accepts is a dialable endpoint that
// reads the same when written back as a URL.
func FuzzParseURL(f *testing.F) {
	for _, s := range urlSeeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		ep, err := parseURL(raw)
		if err != nil {
			if ep != (endpoint{}) {
				t.Fatalf("parseURL(%q) = %+v with error %v", raw, ep, err)
			}
			return
		}
		host, port, err := net.SplitHostPort(ep.addr)
		if err != nil || host == "" {
			t.Fatalf("parseURL(%q) = address %q: %v", raw, ep.addr, err)
		}
		if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 || strconv.Itoa(n) != port {
			t.Fatalf("parseURL(%q) = port %q", raw, port)
		}
		// Nothing of the URL is ignored: no query, no fragment.
		if u, _ := url.Parse(raw); u.Fragment != "" || u.RawFragment != "" || u.ForceQuery || strings.Contains(raw, "#") {
			t.Fatalf("parseURL(%q) ignored part of the URL", raw)
		}
		scheme := "tcp"
		if ep.tls {
			scheme = "ssl"
		}
		h := host
		if strings.Contains(h, ":") {
			h = "[" + strings.ReplaceAll(h, "%", "%25") + "]"
		}
		again := scheme + "://" + h + ":" + port
		if ep2, err := parseURL(again); err != nil || ep2 != ep {
			t.Fatalf("parseURL(%q) = %+v, %v; want %+v", again, ep2, err, ep)
		}
	})
}
