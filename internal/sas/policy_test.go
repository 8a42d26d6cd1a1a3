package sas

import (
	"bytes"
	"errors"
	"strings"
	"testing"
)

const policyKey = "c2VjcmV0LWtleS1zZWNyZXQta2V5LXNlY3JldC1rZXk=" // base64("secret-key-secret-key-secret-key")

func TestParsePolicy(t *testing.T) {
	for _, tc := range []struct {
		in       string
		host, kn string
		err      string
	}{
		{"HostName=lab-dps.azure-devices-provisioning.net;SharedAccessKeyName=provisioningserviceowner;SharedAccessKey=" + policyKey, "lab-dps.azure-devices-provisioning.net", "provisioningserviceowner", ""},
		{"SharedAccessKey=" + policyKey + ";SharedAccessKeyName=p;HostName=h.example;", "h.example", "p", ""},
		{"  HostName=h;SharedAccessKeyName=p;SharedAccessKey=" + policyKey + "\n", "h", "p", ""},
		{"HostName=h;SharedAccessKeyName=p", "", "", "SharedAccessKey missing"},
		{"SharedAccessKeyName=p;SharedAccessKey=" + policyKey, "", "", "HostName missing"},
		{"HostName=h;SharedAccessKey=" + policyKey, "", "", "SharedAccessKeyName missing"},
		{"HostName=h;HostName=i;SharedAccessKeyName=p;SharedAccessKey=" + policyKey, "", "", "given twice"},
		{"HostName=h;SharedAccessKeyName=;SharedAccessKey=" + policyKey, "", "", "SharedAccessKeyName is empty"},
		{"HostName=https://h/;SharedAccessKeyName=p;SharedAccessKey=" + policyKey, "", "", "not a DNS name"},
		{"HostName=h;SharedAccessKeyName=p;SharedAccessKey=not*base64", "", "", "not standard base64"},
		{"HostName=h;SharedAccessKeyName=p;SharedAccessKey=", "", "", "not standard base64"},
		{"HostName=h;DeviceId=d;SharedAccessKey=" + policyKey, "", "", "a device or module connection string"},
		{policyKey, "", "", "field 1 is not HostName"},
		{"HostName=h,SharedAccessKeyName=p,SharedAccessKey=" + policyKey, "", "", "HostName is not a DNS name"},
		{"HostName=h;SharedAccessKeyName=p;SharedAccessKey=" + policyKey + ";junk", "", "", "field 4 has no '='"},
		{"", "", "", "missing"},
		{"HostName=Lab-Hub.azure-devices.net;SharedAccessKeyName=p;SharedAccessKey=" + policyKey, "Lab-Hub.azure-devices.net", "p", ""},
		// HostName goes into hosts files, URLs and token audiences: only a
		// DNS name passes.
		{"HostName=x\n1.2.3.4\vexample.com;SharedAccessKeyName=p;SharedAccessKey=" + policyKey, "", "", "HostName is not a DNS name"},
		{"HostName=h#x;SharedAccessKeyName=p;SharedAccessKey=" + policyKey, "", "", "HostName is not a DNS name"},
		{"HostName=h_x.example;SharedAccessKeyName=p;SharedAccessKey=" + policyKey, "", "", "HostName is not a DNS name"},
		{"HostName=-h.example;SharedAccessKeyName=p;SharedAccessKey=" + policyKey, "", "", "HostName is not a DNS name"},
		{"HostName=h..example;SharedAccessKeyName=p;SharedAccessKey=" + policyKey, "", "", "HostName is not a DNS name"},
		{"HostName=" + strings.Repeat("a", 64) + ".example;SharedAccessKeyName=p;SharedAccessKey=" + policyKey, "", "", "HostName is not a DNS name"},
	} {
		c, err := ParsePolicy(tc.in)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) || !errors.Is(err, ErrPolicy) {
				t.Errorf("ParsePolicy(%q) = %v, want an error with %q", tc.in, err, tc.err)
			}
			if err != nil && (strings.Contains(err.Error(), "not*base64") || strings.Contains(err.Error(), policyKey[:20])) {
				t.Errorf("error echoes the key: %v", err)
			}
			continue
		}
		if err != nil {
			t.Errorf("ParsePolicy(%q) = %v", tc.in, err)
			continue
		}
		if c.HostName != tc.host || c.KeyName != tc.kn || string(c.Key) != "secret-key-secret-key-secret-key" {
			t.Errorf("ParsePolicy(%q) = %s %s %q", tc.in, c.HostName, c.KeyName, c.Key)
		}
	}
}

func TestPolicyRoundTrip(t *testing.T) {
	in := "HostName=h.example;SharedAccessKeyName=provisioningserviceowner;SharedAccessKey=" + policyKey
	c, err := ParsePolicy(in)
	if err != nil {
		t.Fatal(err)
	}
	if c.ConnectionString() != in || strings.Contains(c.String(), policyKey) || !strings.Contains(c.String(), "<redacted>") {
		t.Errorf("ConnectionString() = %q, want %q; String() = %q, want the key redacted", c.ConnectionString(), in, c.String())
	}
}

func FuzzParsePolicy(f *testing.F) {
	f.Add("HostName=h;SharedAccessKeyName=p;SharedAccessKey=" + policyKey)
	f.Add("HostName=h;SharedAccessKeyName=p;SharedAccessKey=" + policyKey + ";")
	f.Add("HostName=h;;SharedAccessKeyName=p=q;SharedAccessKey=AAAA")
	f.Add("=;=;=")
	f.Add(policyKey)
	f.Add("HostName=x\n1.2.3.4\vexample.com;SharedAccessKeyName=p;SharedAccessKey=AAAA")
	f.Fuzz(func(t *testing.T, s string) {
		c, err := ParsePolicy(s)
		if err != nil {
			// Errors quote nothing of the input: none of its fields' values
			// (longer than the words errors use) shows in the error.
			msg := err.Error()
			for part := range strings.SplitSeq(s, ";") {
				_, v, _ := strings.Cut(part, "=")
				if len(v) >= 24 && strings.Contains(msg, v) {
					t.Fatalf("error %q echoes the input %q", msg, v)
				}
			}
			return
		}
		if !ValidDNSName(c.HostName) {
			t.Fatalf("ParsePolicy(%q) took HostName %q, not a DNS name", s, c.HostName)
		}
		again, err := ParsePolicy(c.ConnectionString())
		if err != nil {
			t.Fatalf("String() of a parsed string does not parse: %v", err)
		}
		if again.HostName != c.HostName || again.KeyName != c.KeyName || !bytes.Equal(again.Key, c.Key) {
			t.Fatalf("round trip changed %+v into %+v", c, again)
		}
	})
}

func TestValidDNSName(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want bool
	}{
		{"h", true},
		{"lab-dps.azure-devices-provisioning.net", true},
		{"Lab-Hub.Azure-Devices.net", true},
		{"127.0.0.1", true},
		{"a1-b2.c3", true},
		{strings.Repeat("a", 63) + ".net", true},
		{strings.Repeat(strings.Repeat("a", 63)+".", 3) + strings.Repeat("a", 61), true},  // 253
		{strings.Repeat(strings.Repeat("a", 63)+".", 3) + strings.Repeat("a", 62), false}, // 254
		{strings.Repeat("a", 64) + ".net", false},
		{"", false},
		{".", false},
		{"h.", false},
		{".h", false},
		{"a..b", false},
		{"-a.b", false},
		{"a-.b", false},
		{"a_b.c", false},
		{"a b", false},
		{"a#b", false},
		{"a\nb", false},
		{"a\vb", false},
		{"h:443", false},
		{"[::1]", false},
		{"é.net", false},
	} {
		if got := ValidDNSName(tc.in); got != tc.want {
			t.Errorf("ValidDNSName(%q) = %v, want %v", tc.in, got, tc.want)
		}
	}
}
