package edgehub

import (
	"maps"
	"slices"
	"strings"
	"testing"
	"time"
)

// encodeProperties writes a property bag from maps of system and
// application properties, through appendBag as Session does.
func encodeProperties(system, app map[string]string) string {
	var sys []prop
	for _, k := range systemOrder {
		sys = append(sys, prop{k, system[k]})
	}
	b, _ := appendBag(nil, sys, app)
	return string(b)
}

func TestEncodeProperties(t *testing.T) {
	got := encodeProperties(
		map[string]string{PropOutput: "alerts", PropMessageID: "6f1c", PropContentType: "application/json", PropContentEncoding: "utf-8"},
		map[string]string{"site": "plant 1", "severity": "high", "a&b": "x=y+z"})
	// The example of docs/edge-protocol.md#telemetry-topics-and-properties, plus the reserved characters.
	want := "%24.on=alerts&%24.mid=6f1c&%24.ct=application%2Fjson&%24.ce=utf-8&a%26b=x%3Dy%2Bz&severity=high&site=plant%201"
	if got != want {
		t.Errorf("encodeProperties = %q, want %q", got, want)
	}
}

func TestParseProperties(t *testing.T) {
	for _, tc := range []struct {
		bag       string
		sys, app  map[string]string
		wantError bool
	}{
		{"", map[string]string{}, map[string]string{}, false},
		{"%24.mid=1&%24.cdid=edge1&%24.cmid=tempSensor&site=plant%201", map[string]string{"$.mid": "1", "$.cdid": "edge1", "$.cmid": "tempSensor"}, map[string]string{"site": "plant 1"}, false},
		{"?flag&k=a+b", map[string]string{}, map[string]string{"flag": "", "k": "a+b"}, false},
		{"k=%zz", nil, nil, true},
	} {
		sys, app, err := ParseProperties(tc.bag)
		if (err != nil) != tc.wantError || (!tc.wantError && (!maps.Equal(sys, tc.sys) || !maps.Equal(app, tc.app))) {
			t.Errorf("ParseProperties(%q) = %v, %v, %v; want %v, %v", tc.bag, sys, app, err, tc.sys, tc.app)
		}
	}
}

func FuzzParseProperties(f *testing.F) {
	f.Add("%24.mid=1&site=plant%201")
	f.Add("?flag&k=a+b&&=")
	f.Fuzz(func(t *testing.T, bag string) {
		sys, app, err := ParseProperties(bag)
		if err != nil {
			return
		}
		// What parses re-encodes to something that parses the same.
		sys2, app2, err := ParseProperties(encodeProperties(sys, app))
		if err != nil {
			t.Fatalf("re-encoded bag does not parse: %v", err)
		}
		// Only the system properties a sender sets are encoded.
		for _, k := range []string{PropOutput, PropMessageID, PropCorrelationID, PropContentType, PropContentEncoding, PropExpiry} {
			if v, ok := sys[k]; ok && sys2[k] != v {
				t.Fatalf("system %q = %q after a round trip, want %q", k, sys2[k], v)
			}
		}
		if !maps.Equal(app, app2) {
			t.Fatalf("app properties %v became %v", app, app2)
		}
	})
}

func TestParseInput(t *testing.T) {
	s := &Session{cfg: Config{Identity: Identity{HubHostName: "h", DeviceID: "edge1", ModuleID: "relay", Host: "gw"}}}
	input, m, err := s.parseInput("devices/edge1/modules/relay/inputs/in%201/%24.mid=7&%24.ct=application%2Fjson&%24.cdid=edge1&%24.cmid=sensor&%24.exp=2026-11-23T10%3A00%3A00Z&k=v", []byte("{}"))
	if err != nil || input != "in 1" || m.ID != "7" || m.ContentType != "application/json" || m.From != "edge1/sensor" || m.Properties["k"] != "v" ||
		!m.Expiry.Equal(time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)) {
		t.Errorf("parseInput = %q, %+v, %v", input, m, err)
	}
	for _, topic := range []string{"devices/edge1/modules/other/inputs/x/", "devices/edge1/modules/relay/inputs//", "devices/edge1/modules/relay/inputs/x/k=%zz"} {
		if _, _, err := s.parseInput(topic, nil); err == nil {
			t.Errorf("parseInput(%q) = nil error", topic)
		}
	}
}

func TestIdentity(t *testing.T) {
	id := Identity{HubHostName: "myhub.azure-devices.net", DeviceID: "edge1", ModuleID: "filtermodule", Host: "edge1-host"}
	if id.clientID() != "edge1/filtermodule" || id.address() != "edge1-host:8883" ||
		id.username() != "myhub.azure-devices.net/edge1/filtermodule/?api-version=2019-10-01&DeviceClientType=edgetpm-edge-relay%2F1" ||
		id.resource() != "myhub.azure-devices.net/devices/edge1/modules/filtermodule" || id.prefix() != "devices/edge1/modules/filtermodule" {
		t.Errorf("module identity: %q %q %q %q %q", id.clientID(), id.address(), id.username(), id.resource(), id.prefix())
	}
	dev := Identity{HubHostName: "myhub.azure-devices.net", DeviceID: "edge1", Host: "myhub.azure-devices.net"}
	if dev.clientID() != "edge1" || dev.prefix() != "devices/edge1" || dev.username() != "myhub.azure-devices.net/edge1/?api-version=2019-10-01&DeviceClientType=edgetpm-edge-relay%2F1" {
		t.Errorf("device identity: %q %q %q", dev.clientID(), dev.prefix(), dev.username())
	}
}

func TestEnvironmentFrom(t *testing.T) {
	full := map[string]string{
		"IOTEDGE_WORKLOADURI": "unix:///var/run/iotedge/workload.sock", "IOTEDGE_AUTHSCHEME": "sasToken",
		"IOTEDGE_MODULEGENERATIONID": "637862958472233925", "IOTEDGE_IOTHUBHOSTNAME": "myhub.azure-devices.net",
		"IOTEDGE_GATEWAYHOSTNAME": "edge1-host", "IOTEDGE_DEVICEID": "edge1", "IOTEDGE_MODULEID": "filtermodule",
		"IOTEDGE_APIVERSION": "2022-08-03",
	}
	e, err := EnvironmentFrom(func(k string) string { return full[k] })
	if err != nil || e.Identity() != (Identity{HubHostName: "myhub.azure-devices.net", DeviceID: "edge1", ModuleID: "filtermodule", Host: "edge1-host"}) {
		t.Errorf("EnvironmentFrom(full) = %+v, %v", e, err)
	}
	_, err = EnvironmentFrom(func(k string) string {
		if k == "IOTEDGE_DEVICEID" || k == "IOTEDGE_GATEWAYHOSTNAME" {
			return ""
		}
		return full[k]
	})
	if err == nil || !strings.Contains(err.Error(), "IOTEDGE_DEVICEID, IOTEDGE_GATEWAYHOSTNAME") {
		t.Errorf("EnvironmentFrom without two = %v, want both named", err)
	}
	full["IOTEDGE_AUTHSCHEME"] = "x509"
	if _, err := EnvironmentFrom(func(k string) string { return full[k] }); err == nil {
		t.Error("x509 auth scheme accepted")
	}
}

func TestParseConnectionString(t *testing.T) {
	id, key, err := ParseConnectionString("HostName=h.azure-devices.net;DeviceId=edge1;ModuleId=relay;SharedAccessKey=c2VjcmV0;GatewayHostName=gw")
	if err != nil || id != (Identity{HubHostName: "h.azure-devices.net", DeviceID: "edge1", ModuleID: "relay", Host: "gw"}) || string(key) != "secret" {
		t.Errorf("ParseConnectionString = %+v, %q, %v", id, key, err)
	}
	id, _, err = ParseConnectionString("HostName=h;DeviceId=d;SharedAccessKey=c2VjcmV0")
	if err != nil || id.Host != "h" || id.ModuleID != "" {
		t.Errorf("device connection string = %+v, %v", id, err)
	}
	for _, bad := range []string{"", "HostName=h;DeviceId=d", "HostName=h;DeviceId=d;SharedAccessKey=!!", "HostName=h;DeviceId=d;SharedAccessKey=c2VjcmV0;Extra=1", "HostName=h;HostName=i;DeviceId=d;SharedAccessKey=c2VjcmV0", "junk"} {
		if _, key, err := ParseConnectionString(bad); err == nil || (key != nil && strings.Contains(err.Error(), string(key))) {
			t.Errorf("ParseConnectionString(%q) = %v", bad, err)
		}
	}
}

// The telemetry topic of a typical reading, built per message: the
// session's encoding beside the map-based one it replaced (a map of
// system properties, sorted keys, joined parts), which allocated a dozen
// times per reading.
func BenchmarkEncode(b *testing.B) {
	s := &Session{cfg: Config{Identity: Identity{HubHostName: "h", DeviceID: "edge1", ModuleID: "relay", Host: "gw"}}}
	m := &Message{ID: NewMessageID(), ContentType: "application/json", ContentEncoding: "utf-8", Body: make([]byte, 256),
		Properties: map[string]string{"mqtt-topic": "plant/line3/press7/pressure", "line": "3"}}
	want, _ := s.encode("telemetry", m)
	b.Run("session", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			s.encode("telemetry", m)
		}
	})
	b.Run("maps", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			sys := map[string]string{PropOutput: "telemetry", PropMessageID: m.ID, PropContentType: m.ContentType, PropContentEncoding: m.ContentEncoding}
			var parts []string
			for _, k := range []string{PropOutput, PropMessageID, PropCorrelationID, PropContentType, PropContentEncoding, PropExpiry} {
				if v, ok := sys[k]; ok {
					parts = append(parts, escape(k)+"="+escape(v))
				}
			}
			for _, k := range slices.Sorted(maps.Keys(m.Properties)) {
				parts = append(parts, escape(k)+"="+escape(m.Properties[k]))
			}
			if got := s.cfg.Identity.prefix() + "/messages/events/" + strings.Join(parts, "&"); got != want {
				b.Fatalf("topics differ:\n%s\n%s", got, want)
			}
		}
	})
}
