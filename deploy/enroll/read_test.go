package enroll

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
)

var readCases = []struct {
	name, in string
	want     []Record
	err      string // a substring of the error; "" for none
}{
	{"identity --json", `{
  "registrationId": "dev1",
  "endorsementKey": "AAEC",
  "storageRootKey": "AAED",
  "endorsementKeyCertificate": null
}
`, []Record{{Line: 1, RegistrationID: "dev1", EndorsementKey: "AAEC", StorageRootKey: "AAED"}}, ""},
	{"json lines with settings", `{"registrationId":"a","endorsementKey":"AA==","eccEndorsementKeyCertificate":null,"endorsementKeyCertificateChain":[]}
{"registrationId":"b","endorsementKey":"AQ==","deviceId":"press-2","iotEdge":false,"iotHubs":["h1.azure-devices.net"],"tags":{"line":"3"}}
`, []Record{
		{Line: 1, RegistrationID: "a", EndorsementKey: "AA==", Chain: []string{}},
		{Line: 2, RegistrationID: "b", EndorsementKey: "AQ==", DeviceID: "press-2", IoTEdge: ptr(false), IoTHubs: []string{"h1.azure-devices.net"}, Tags: map[string]json.RawMessage{"line": json.RawMessage(`"3"`)}},
	}, ""},
	{"csv", "\xef\xbb\xbfregistrationId,endorsementKey,endorsementKeyCertificate,deviceId,iotEdge,iotHubs,tag.site,desiredProperties\n" +
		"a,AA==,,,true,h1.x;h2.x,plant-7,\"{\"\"interval\"\":5}\"\n" +
		"b, AQ== ,CERT,press-2,,,,\n",
		[]Record{
			{Line: 2, RegistrationID: "a", EndorsementKey: "AA==", IoTEdge: ptr(true), IoTHubs: []string{"h1.x", "h2.x"}, Tags: map[string]json.RawMessage{"site": json.RawMessage(`"plant-7"`)}, Desired: map[string]json.RawMessage{"interval": json.RawMessage("5")}},
			{Line: 3, RegistrationID: "b", EndorsementKey: "AQ==", Certificate: "CERT", DeviceID: "press-2"},
		}, ""},
	{"empty", " \n", nil, "no identities"},
	{"csv header only", "registrationId,endorsementKey\n", nil, "no identities"},
	{"unknown json field", `{"registrationId":"a","endorsementKey":"AA==","device":"x"}`, nil, `line 1: json: unknown field "device"`},
	{"json syntax", "{\"registrationId\":\"a\",\"endorsementKey\":\"AA==\"}\n{\"registrationId\":\n", nil, "line 2"},
	{"json without EK", "{\"registrationId\":\"a\",\"endorsementKey\":\"AA==\"}\n\n{\"registrationId\":\"b\"}", nil, "line 3: no registrationId and endorsementKey"},
	{"unknown column", "registrationId,endorsementKey,colour\n", nil, `unknown column "colour"`},
	{"column twice", "registrationId,endorsementKey,registrationId\n", nil, `column "registrationId" twice`},
	{"no EK column", "registrationId,deviceId\n", nil, "at least the columns"},
	{"bad iotEdge", "registrationId,endorsementKey,iotEdge\na,AA==,yes\n", nil, `line 2: column iotEdge: "yes" is not true or false`},
	{"bad tags", "registrationId,endorsementKey,tags\na,AA==,[1]\n", nil, "line 2: column tags: not a JSON object"},
	{"short row", "registrationId,endorsementKey,deviceId\na,AA==\n", nil, "wrong number of fields"},
	{"csv row without EK", "registrationId,endorsementKey\na,\n", nil, "line 2: no registrationId"},
}

func ptr[T any](v T) *T { return &v }

func TestRead(t *testing.T) {
	for _, tc := range readCases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Read(strings.NewReader(tc.in))
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("Read = %v, want an error with %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("Read =\n%+v\nwant\n%+v", got, tc.want)
			}
		})
	}
}

func FuzzRead(f *testing.F) {
	for _, tc := range readCases {
		f.Add(tc.in)
	}
	f.Fuzz(func(t *testing.T, in string) {
		recs, err := Read(strings.NewReader(in))
		if err != nil {
			return
		}
		if len(recs) == 0 {
			t.Fatal("no records and no error")
		}
		for _, r := range recs {
			if r.RegistrationID == "" || r.EndorsementKey == "" || r.Line < 1 || r.Line > strings.Count(in, "\n")+1 {
				t.Fatalf("record %+v", r)
			}
			// What Read takes, Enroll can build settings of or refuse.
			if s, err := (Settings{}).over(&r); err == nil {
				_ = s.enrollment(r.RegistrationID, []byte{1}, &Check{})
			}
		}
	})
}

var readIDsCases = []struct {
	name, in string
	want     []string
	err      string
}{
	{"plain list", "dev-1\n\n  dev-2  \r\ndev-3", []string{"dev-1", "dev-2", "dev-3"}, ""},
	{"identity file", `{"registrationId":"a","endorsementKey":"AA=="}` + "\n" + `{"registrationId":"b"}`, []string{"a", "b"}, ""},
	{"csv of IDs", "registrationId,deviceId\na,press-1\nb,\n", []string{"a", "b"}, ""},
	{"csv identity file", "registrationId,endorsementKey\na,AA==\n", []string{"a"}, ""},
	{"json without ID", `{"deviceId":"x"}`, nil, "line 1: no registrationId"},
	{"csv without ID column", "deviceId,iotEdge\n", nil, "registrationId"},
	{"empty", "\n \n", nil, "no registration IDs"},
	{"list with a comma", "dev-1\ndev-2,dev-3\n", nil, "line 2"},
}

// Show, disable and delete take a file of registration IDs alone, or the
// identity file the devices were enrolled from.
func TestReadIDs(t *testing.T) {
	for _, tc := range readIDsCases {
		got, err := ReadIDs(strings.NewReader(tc.in))
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%s: ReadIDs = %v, %v; want an error with %q", tc.name, got, err, tc.err)
			}
			continue
		}
		if err != nil || !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%s: ReadIDs = %q, %v; want %q", tc.name, got, err, tc.want)
		}
	}
}

func FuzzReadIDs(f *testing.F) {
	for _, tc := range readIDsCases {
		f.Add(tc.in)
	}
	f.Fuzz(func(t *testing.T, in string) {
		ids, err := ReadIDs(strings.NewReader(in))
		if err != nil {
			return
		}
		if len(ids) == 0 {
			t.Fatal("no IDs and no error")
		}
		for _, id := range ids {
			if id == "" {
				t.Fatalf("an empty ID from %q", in)
			}
		}
	})
}
