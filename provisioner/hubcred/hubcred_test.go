package hubcred

import (
	"bytes"
	"encoding/base64"
	"errors"
	"strings"
	"testing"

	"github.com/edgetpm/edgetpm/internal/sas"
)

// key32 is a key as the portal generates it: 32 bytes, 44 base64 characters.
var key32 = bytes.Repeat([]byte{0xa7}, 32)
var key32b64 = base64.StdEncoding.EncodeToString(key32)

var connTests = []struct {
	in      string
	want    *Credential
	wantErr string
}{
	{"HostName=plant-7.azure-devices.net;DeviceId=press-7;SharedAccessKey=" + key32b64, &Credential{"plant-7.azure-devices.net", "press-7", key32}, ""},
	{" DeviceId=press-7 ; SharedAccessKey=" + key32b64 + ";HostName=lab-hub.azure-devices.net;\n", &Credential{"lab-hub.azure-devices.net", "press-7", key32}, ""},
	{"HostName=Plant-Gov.azure-devices.us;DeviceId=a:b.c;SharedAccessKey=" + base64.StdEncoding.EncodeToString(make([]byte, 16)), &Credential{"Plant-Gov.azure-devices.us", "a:b.c", make([]byte, 16)}, ""},
	{"HostName=hub.azure-devices.cn;DeviceId=d;SharedAccessKey=" + base64.StdEncoding.EncodeToString(make([]byte, 64)), &Credential{"hub.azure-devices.cn", "d", make([]byte, 64)}, ""},
	{"HostName=plant-7.azure-devices.net;DeviceId=press-7;SharedAccessKey=" + key32b64[:43], nil, "not standard base64"},
	{"HostName=plant-7.azure-devices.net;DeviceId=press-7;SharedAccessKey=" + base64.RawURLEncoding.EncodeToString(key32), nil, "not standard base64"},
	{"HostName=plant-7.azure-devices.net;DeviceId=press-7;SharedAccessKey=" + base64.StdEncoding.EncodeToString(make([]byte, 15)), nil, "15 bytes once decoded"},
	{"HostName=plant-7.azure-devices.net;DeviceId=press-7;SharedAccessKey=" + base64.StdEncoding.EncodeToString(make([]byte, 65)), nil, "65 bytes once decoded"},
	{"HostName=plant-7.azure-devices.net;DeviceId=press-7;SharedAccessKey=", nil, "the key is empty"},
	{"HostName=plant-7.azure-devices.net;DeviceId=;SharedAccessKey=" + key32b64, nil, "device ID is empty"},
	{"HostName=plant-7.azure-devices.net;DeviceId=press 7;SharedAccessKey=" + key32b64, nil, "device ID must be"},
	{"HostName=plant-7.azure-devices.net;DeviceId=" + strings.Repeat("d", 129) + ";SharedAccessKey=" + key32b64, nil, "device ID must be"},
	{"HostName=plant-7.example.com;DeviceId=press-7;SharedAccessKey=" + key32b64, nil, "not an IoT hub's"},
	{"HostName=azure-devices.net;DeviceId=press-7;SharedAccessKey=" + key32b64, nil, "not an IoT hub's"},
	{"HostName=ab.azure-devices.net;DeviceId=press-7;SharedAccessKey=" + key32b64, nil, "3 to 50"},
	{"HostName=-plant.azure-devices.net;DeviceId=press-7;SharedAccessKey=" + key32b64, nil, "3 to 50"},
	{"HostName=plant_7.azure-devices.net;DeviceId=press-7;SharedAccessKey=" + key32b64, nil, "letters, digits or hyphens"},
	{"HostName=a.b.azure-devices.net;DeviceId=press-7;SharedAccessKey=" + key32b64, nil, "letters, digits or hyphens"},
	{"HostName=plant-7.azure-devices.net;DeviceId=press-7;SharedAccessSignature=SharedAccessSignature sr=plant-7.azure-devices.net%2Fdevices%2Fpress-7&sig=" + key32b64 + "&se=1", nil, "SharedAccessSignature, a token that expires"},
	{"HostName=plant-7.azure-devices.net;DeviceId=press-7;ModuleId=relay;SharedAccessKey=" + key32b64, nil, "module's connection string"},
	{"HostName=plant-7.azure-devices.net;SharedAccessKeyName=iothubowner;SharedAccessKey=" + key32b64, nil, "shared access policy's"},
	{"HostName=plant-7.azure-devices.net;DeviceId=press-7;SharedAccessKey=" + key32b64 + ";GatewayHostName=edge1", nil, "downstream device's"},
	{"HostName=plant-7.azure-devices.net;DeviceId=press-7;x509=true", nil, "X.509"},
	{"HostName=plant-7.azure-devices.net;DeviceId=press-7;DeviceId=press-8;SharedAccessKey=" + key32b64, nil, "DeviceId given twice"},
	{"HostName=plant-7.azure-devices.net;DeviceId=press-7", nil, "no SharedAccessKey"},
	{"DeviceId=press-7;SharedAccessKey=" + key32b64, nil, "no HostName"},
	{key32b64, nil, "a key alone"},
	{"HostName;DeviceId=d", nil, "field 1 has no '='"},
	{"", nil, "no HostName"},
	{"HostName=plant-7.azure-devices.net;Bogus=" + key32b64, nil, "field 2 is not"},
}

func TestParseConnectionString(t *testing.T) {
	for _, tc := range connTests {
		got, err := ParseConnectionString([]byte(tc.in))
		if tc.wantErr != "" {
			if err == nil || !errors.Is(err, ErrInput) || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("ParseConnectionString(%q) = %v, %v; want an ErrInput with %q", tc.in, got, err, tc.wantErr)
			}
			if err != nil && strings.Contains(err.Error(), key32b64) {
				t.Errorf("ParseConnectionString(%q) = %v: the error quotes the key", tc.in, err)
			}
			continue
		}
		if err != nil || got.HostName != tc.want.HostName || got.DeviceID != tc.want.DeviceID || !bytes.Equal(got.Key, tc.want.Key) {
			t.Errorf("ParseConnectionString(%q) = %+v, %v; want %+v", tc.in, got, err, tc.want)
		}
	}
}

func TestCredentialHidesKey(t *testing.T) {
	c, err := ParseConnectionString([]byte(connTests[0].in))
	if err != nil {
		t.Fatal(err)
	}
	if s := c.String(); strings.Contains(s, key32b64) || !strings.Contains(s, "<redacted>") || !strings.Contains(s, "press-7") {
		t.Errorf("String() = %q", s)
	}
	k := c.Key
	c.Zero()
	if c.Key != nil || !bytes.Equal(k, make([]byte, 32)) {
		t.Errorf("Zero left the key: %x", k)
	}
}

func TestNew(t *testing.T) {
	c, err := New("lab-hub.azure-devices.net", "press-7", []byte(" "+key32b64+"\n"))
	if err != nil || !bytes.Equal(c.Key, key32) {
		t.Fatalf("New = %+v, %v", c, err)
	}
	for _, tc := range []struct{ host, device, key, want string }{
		{"lab-hub.azure-devices.net", "", key32b64, "device ID is empty"},
		{"localhost", "press-7", key32b64, "not an IoT hub's"},
		{"lab-hub.azure-devices.net", "press-7", "not base64!", "not standard base64"},
		{"lab-hub.azure-devices.net", "press-7", base64.StdEncoding.EncodeToString(make([]byte, 8)), "8 bytes once decoded"},
	} {
		if _, err := New(tc.host, tc.device, []byte(tc.key)); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("New(%q, %q, key) = %v, want %q", tc.host, tc.device, err, tc.want)
		}
	}
}

// secretKey is planted in fuzzed connection strings: no error and no
// String may show it, whatever surrounds it.
const secretKey = "c2VjcmV0LWtleS1uZXZlci1zaG93bi0wMTIzNDU2Nzg5YWI="

func FuzzParseConnectionString(f *testing.F) {
	for _, tc := range connTests {
		f.Add(tc.in, "")
	}
	f.Add("HostName=plant-7.azure-devices.net;DeviceId=press-7;", "")
	f.Add("HostName=plant-7.azure-devices.net;DeviceId=press-7;ModuleId=m;", ";x509=true")
	f.Fuzz(func(t *testing.T, prefix, suffix string) {
		for _, in := range []string{prefix, prefix + "SharedAccessKey=" + secretKey + suffix} {
			c, err := ParseConnectionString([]byte(in))
			if err != nil {
				if !errors.Is(err, ErrInput) {
					t.Fatalf("error %v is not an ErrInput", err)
				}
				if strings.Contains(err.Error(), secretKey) || strings.Contains(err.Error(), "secret-key") {
					t.Fatalf("the error shows the key: %v", err)
				}
				continue
			}
			if CheckHostName(c.HostName) != nil || !sas.ValidID(c.DeviceID) || len(c.Key) < MinKeyLen || len(c.Key) > MaxKeyLen {
				t.Fatalf("ParseConnectionString(%q) accepted %+v", in, c)
			}
			if strings.Contains(c.String(), secretKey) {
				t.Fatalf("String() shows the key: %s", c)
			}
		}
	})
}
