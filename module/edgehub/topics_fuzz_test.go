package edgehub

import (
	"encoding/base64"
	"strconv"
	"strings"
	"testing"
)

var methodTopics = []struct {
	topic     string
	name, rid string
	wantError bool
}{
	{"$iothub/methods/POST/flush/?$rid=1", "flush", "1", false},
	{"$iothub/methods/POST/dead%20letters/?$rid=a%2Fb&x=y", "dead%20letters", "a/b", false},
	{"$iothub/methods/POST/flush/?%24rid=7", "flush", "7", false},
	{"$iothub/methods/POST/flush/", "", "", true},
	{"$iothub/methods/POST//?$rid=1", "", "", true},
	{"$iothub/methods/POST/flush/?$rid=%zz", "", "", true},
	{"$iothub/twin/res/200/?$rid=1", "", "", true},
}

func TestParseMethodTopic(t *testing.T) {
	for _, tc := range methodTopics {
		name, rid, err := parseMethodTopic(tc.topic)
		if (err != nil) != tc.wantError || name != tc.name || rid != tc.rid {
			t.Errorf("parseMethodTopic(%q) = %q, %q, %v; want %q, %q, error %v", tc.topic, name, rid, err, tc.name, tc.rid, tc.wantError)
		}
	}
}

var twinResponseTopics = []struct {
	topic     string
	status    int
	rid       string
	wantError bool
}{
	{"$iothub/twin/res/200/?$rid=1", 200, "1", false},
	{"$iothub/twin/res/204/?$rid=17&$version=4", 204, "17", false},
	{"$iothub/twin/res/429/?$rid=", 429, "", false},
	{"$iothub/twin/res/0/?$rid=1", 0, "", true},
	{"$iothub/twin/res/-1/?$rid=1", 0, "", true},
	{"$iothub/twin/res/ok/?$rid=1", 0, "", true},
	{"$iothub/twin/PATCH/properties/desired/?$version=3", 0, "", true},
}

func TestParseTwinResponseTopic(t *testing.T) {
	for _, tc := range twinResponseTopics {
		status, rid, err := parseTwinResponseTopic(tc.topic)
		if (err != nil) != tc.wantError || status != tc.status || rid != tc.rid {
			t.Errorf("parseTwinResponseTopic(%q) = %d, %q, %v; want %d, %q, error %v", tc.topic, status, rid, err, tc.status, tc.rid, tc.wantError)
		}
	}
}

func FuzzParseMethodTopic(f *testing.F) {
	for _, tc := range methodTopics {
		f.Add(tc.topic)
	}
	f.Fuzz(func(t *testing.T, topic string) {
		name, rid, err := parseMethodTopic(topic)
		if err != nil {
			if name != "" || rid != "" {
				t.Fatalf("parseMethodTopic(%q) = %q, %q with error %v", topic, name, rid, err)
			}
			return
		}
		if name == "" || strings.Contains(name, "/") || rid == "" {
			t.Fatalf("parseMethodTopic(%q) = %q, %q", topic, name, rid)
		}
		// The request ID goes back in the answer's topic and must come
		// back unchanged, whatever it holds.
		resp := methodResponseTopic(200, rid)
		if strings.ContainsAny(resp, "+#\x00") {
			t.Fatalf("answer topic %q is not a valid MQTT topic name", resp)
		}
		if _, q, _ := strings.Cut(strings.TrimPrefix(resp, "$iothub/methods/res/"), "/"); queryValue(q, "$rid") != rid {
			t.Fatalf("answer topic %q carries $rid %q, want %q", resp, queryValue(q, "$rid"), rid)
		}
		// What parses, rebuilt as edgeHub would send it, parses the same.
		again := methodPrefix + name + "/?$rid=" + escape(rid)
		if n2, r2, err := parseMethodTopic(again); err != nil || n2 != name || r2 != rid {
			t.Fatalf("parseMethodTopic(%q) = %q, %q, %v; want %q, %q", again, n2, r2, err, name, rid)
		}
	})
}

func FuzzParseTwinResponseTopic(f *testing.F) {
	for _, tc := range twinResponseTopics {
		f.Add(tc.topic)
	}
	f.Fuzz(func(t *testing.T, topic string) {
		status, rid, err := parseTwinResponseTopic(topic)
		if err != nil {
			return
		}
		if status <= 0 {
			t.Fatalf("parseTwinResponseTopic(%q) = status %d", topic, status)
		}
		again := twinResponsePrefix + strconv.Itoa(status) + "/?$rid=" + escape(rid)
		if s2, r2, err := parseTwinResponseTopic(again); err != nil || s2 != status || r2 != rid {
			t.Fatalf("parseTwinResponseTopic(%q) = %d, %q, %v; want %d, %q", again, s2, r2, err, status, rid)
		}
	})
}

var connectionStrings = []string{
	"HostName=h.azure-devices.net;DeviceId=edge1;ModuleId=relay;SharedAccessKey=c2VjcmV0;GatewayHostName=gw",
	"HostName=h;DeviceId=d;SharedAccessKey=c2VjcmV0",
	" HostName = h ; DeviceId=d;SharedAccessKey=c2VjcmV0;",
	"HostName=h;DeviceId=a:b.c-d_e%f*g?h!i(j)k,l=m@n$o'p+q#r;SharedAccessKey=c2VjcmV0",
	"", "HostName=h;DeviceId=d", "HostName=h;DeviceId=d;SharedAccessKey=!!", "HostName=h;DeviceId=d;SharedAccessKey=c2VjcmV0;Extra=1",
	"HostName=h;HostName=i;DeviceId=d;SharedAccessKey=c2VjcmV0", "junk",
}

// IDs and host names that would make wrong topics, user names or token
// audiences are refused, not passed on.
func TestParseConnectionStringRefusesBadNames(t *testing.T) {
	long := strings.Repeat("d", 129)
	for _, bad := range []string{
		"HostName=h;DeviceId=a/b;SharedAccessKey=c2VjcmV0",
		"HostName=h;DeviceId=d;ModuleId=m n;SharedAccessKey=c2VjcmV0",
		"HostName=h;DeviceId=d;ModuleId=m\x00;SharedAccessKey=c2VjcmV0",
		"HostName=h;DeviceId=dé;SharedAccessKey=c2VjcmV0",
		"HostName=h;DeviceId=" + long + ";SharedAccessKey=c2VjcmV0",
		"HostName=h/x;DeviceId=d;SharedAccessKey=c2VjcmV0",
		"HostName=h x;DeviceId=d;SharedAccessKey=c2VjcmV0",
		"HostName=h;DeviceId=d;SharedAccessKey=c2VjcmV0;GatewayHostName=g/w",
		"HostName=h;DeviceId=d;ModuleId=;SharedAccessKey=c2VjcmV0",
	} {
		if id, _, err := ParseConnectionString(bad); err == nil {
			t.Errorf("ParseConnectionString(%q) = %+v, want an error", bad, id)
		}
	}
	id, _, err := ParseConnectionString("HostName=h;DeviceId=a:b.c-d_e%f*g?h!i(j)k,l=m@n$o'p+q#r;SharedAccessKey=c2VjcmV0")
	if err != nil || id.DeviceID != "a:b.c-d_e%f*g?h!i(j)k,l=m@n$o'p+q#r" {
		t.Errorf("ParseConnectionString(every allowed character) = %+v, %v", id, err)
	}
}

func FuzzParseConnectionString(f *testing.F) {
	for _, s := range connectionStrings {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		id, key, err := ParseConnectionString(s)
		if err != nil {
			if key != nil {
				t.Fatalf("ParseConnectionString(%q) returned a key with error %v", s, err)
			}
			return
		}
		if id.HubHostName == "" || id.DeviceID == "" || id.Host == "" || len(key) == 0 {
			t.Fatalf("ParseConnectionString(%q) = %+v, %d-byte key", s, id, len(key))
		}
		for _, n := range []string{id.DeviceID, id.ModuleID, id.HubHostName, id.Host} {
			if strings.ContainsAny(n, "/ \t\r\n\x00;") {
				t.Fatalf("ParseConnectionString(%q) passed on the name %q", s, n)
			}
		}
		// Written back in the usual form, it reads the same.
		again := "HostName=" + id.HubHostName + ";DeviceId=" + id.DeviceID
		if id.ModuleID != "" {
			again += ";ModuleId=" + id.ModuleID
		}
		again += ";SharedAccessKey=" + base64.StdEncoding.EncodeToString(key)
		if id.Host != id.HubHostName {
			again += ";GatewayHostName=" + id.Host
		}
		id2, key2, err := ParseConnectionString(again)
		if err != nil || id2 != id || string(key2) != string(key) {
			t.Fatalf("ParseConnectionString(%q) = %+v, %v; want %+v", again, id2, err, id)
		}
	})
}
