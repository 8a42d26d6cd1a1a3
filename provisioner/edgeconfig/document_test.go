package edgeconfig

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/out")

func testDPS() DPS {
	return DPS{
		Hostname: "gw-lab-7", AutoReprovisioningMode: "Dynamic",
		GlobalEndpoint: DefaultGlobalEndpoint, IDScope: "0ne00ABCDEF",
		RegistrationID: "gw-lab-7-tpm", TCTI: "device:/dev/tpmrm0", AuthKeyIndex: 0x100,
	}
}

func withOwner(s DPS) DPS {
	s.OwnerAuth = "owner-pw"
	return s
}

// setTests are SetDPS on testdata/in/IN.toml ("" for no file); their output
// is testdata/out/NAME.toml.
var setTests = []struct {
	name, in string
	dps      DPS
	force    bool
	refused  *SourceError // SetDPS must return this
}{
	{name: "fresh", dps: func() DPS { s := withOwner(testDPS()); s.PayloadURI = "file:///etc/aziot/payload.json"; return s }()},
	{name: "fresh-minimal", dps: DPS{GlobalEndpoint: DefaultGlobalEndpoint, IDScope: "0ne00ABCDEF", RegistrationID: "r", TCTI: "device"}},
	{name: "template", in: "template", dps: testDPS()},
	{name: "manual", in: "manual", dps: testDPS(), refused: &SourceError{Current: "manual"}},
	{name: "manual-force", in: "manual", dps: testDPS(), force: true},
	{name: "manual-sas-force", in: "manual-sas", dps: testDPS(), force: true},
	{name: "x509", in: "x509", dps: testDPS(), refused: &SourceError{Current: "dps", Method: "x509"}},
	{name: "x509-force", in: "x509", dps: testDPS(), force: true},
	{name: "tpm-old", in: "tpm-old", dps: func() DPS { s := withOwner(testDPS()); s.PayloadURI = "file:///etc/aziot/payload.json"; return s }()},
	{name: "tpm-old-clear", in: "tpm-old", dps: testDPS()},
	{name: "inline", in: "inline", dps: withOwner(testDPS())},
	{name: "dotted", in: "dotted", dps: withOwner(testDPS())},
	{name: "subtable-first", in: "subtable-first", dps: withOwner(testDPS())},
}

func readIn(t testing.TB, name string) []byte {
	if name == "" {
		return nil
	}
	data, err := os.ReadFile(filepath.Join("testdata", "in", name+".toml"))
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func TestSetDPS(t *testing.T) {
	for _, tc := range setTests {
		t.Run(tc.name, func(t *testing.T) {
			in := readIn(t, tc.in)
			doc, err := Parse(in)
			if err != nil {
				t.Fatalf("Parse(%s) = %v", tc.in, err)
			}
			err = doc.SetDPS(tc.dps, tc.force)
			if tc.refused != nil {
				var se *SourceError
				if !errors.As(err, &se) || *se != *tc.refused {
					t.Fatalf("SetDPS = %v, want %#v", err, tc.refused)
				}
				if !bytes.Equal(doc.Bytes(), in) {
					t.Errorf("a refused SetDPS changed the document to\n%s", doc.Bytes())
				}
				return
			}
			if err != nil {
				t.Fatalf("SetDPS = %v", err)
			}
			out := doc.Bytes()
			golden := filepath.Join("testdata", "out", tc.name+".toml")
			if *update {
				if err := os.WriteFile(golden, out, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(out, want) {
				t.Errorf("SetDPS output differs from %s (run with -update to accept):\n%s", golden, Diff(golden, want, out))
			}
			if err := checkEdit(in, out, tc.dps); err != nil {
				t.Error(err)
			}
		})
	}
}

// checkEdit checks that out, the result of SetDPS(s) on in, is valid,
// holds s, keeps everything SetDPS does not own, and does not change when
// SetDPS runs again.
func checkEdit(in, out []byte, s DPS) error {
	if err := Validate(out); err != nil {
		return fmt.Errorf("Validate(output) = %v\n%s", err, out)
	}
	before, err := decode(in)
	if err != nil {
		return err
	}
	after, _ := decode(out)
	got := after
	strip := func(m map[string]any) map[string]any {
		c := map[string]any{}
		for k, v := range m {
			c[k] = v
		}
		delete(c, "provisioning")
		delete(c, "tpm")
		if s.Hostname != "" {
			delete(c, "hostname")
		}
		if s.AutoReprovisioningMode != "" {
			delete(c, "auto_reprovisioning_mode")
		}
		return c
	}
	if b, a := strip(before), strip(after); !equalValues(b, a) {
		return fmt.Errorf("settings SetDPS does not own changed:\nbefore %v\nafter  %v", b, a)
	}
	type check struct {
		key       string
		got, want any
	}
	checks := []check{
		{"provisioning.source", lookup(got, "provisioning", "source"), "dps"},
		{"provisioning.global_endpoint", lookup(got, "provisioning", "global_endpoint"), s.GlobalEndpoint},
		{"provisioning.id_scope", lookup(got, "provisioning", "id_scope"), s.IDScope},
		{"provisioning.attestation.method", lookup(got, "provisioning", "attestation", "method"), "tpm"},
		{"provisioning.attestation.registration_id", lookup(got, "provisioning", "attestation", "registration_id"), s.RegistrationID},
		{"tpm.tcti", lookup(got, "tpm", "tcti"), s.TCTI},
		{"tpm.auth_key_index", lookup(got, "tpm", "auth_key_index"), int64(s.AuthKeyIndex)},
		{"provisioning.payload.uri", lookup(got, "provisioning", "payload", "uri"), nil},
		{"tpm.hierarchy_authorization.endorsement", lookup(got, "tpm", "hierarchy_authorization", "endorsement"), nil},
		{"tpm.hierarchy_authorization.owner", lookup(got, "tpm", "hierarchy_authorization", "owner"), nil},
		{"keys of provisioning", keys(got, "provisioning"), "attestation global_endpoint id_scope source"},
		{"keys of provisioning.attestation", keys(got, "provisioning", "attestation"), "method registration_id"},
		{"keys of tpm", keys(got, "tpm"), "auth_key_index tcti"},
	}
	if s.PayloadURI != "" {
		checks[7].want = s.PayloadURI
		checks[10].want = "attestation global_endpoint id_scope payload source"
	}
	if s.EndorsementAuth != "" || s.OwnerAuth != "" {
		checks[8].want, checks[9].want = s.EndorsementAuth, s.OwnerAuth
		checks[12].want = "auth_key_index hierarchy_authorization tcti"
	}
	if s.Hostname != "" {
		checks = append(checks, check{"hostname", got["hostname"], s.Hostname})
	}
	if s.AutoReprovisioningMode != "" {
		checks = append(checks, check{"auto_reprovisioning_mode", got["auto_reprovisioning_mode"], s.AutoReprovisioningMode})
	}
	for _, c := range checks {
		if !reflect.DeepEqual(c.got, c.want) {
			return fmt.Errorf("%s = %#v, want %#v in\n%s", c.key, c.got, c.want, out)
		}
	}
	doc, err := Parse(out)
	if err != nil {
		return err
	}
	if err := doc.SetDPS(s, false); err != nil {
		return fmt.Errorf("second SetDPS = %v", err)
	}
	if !bytes.Equal(doc.Bytes(), out) {
		return fmt.Errorf("second SetDPS changed the output:\n%s", Diff("first", out, doc.Bytes()))
	}
	return nil
}

// keys lists the keys of the table at path, sorted.
func keys(tree map[string]any, path ...string) string {
	m, _ := lookup(tree, path...).(map[string]any)
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return strings.Join(ks, " ")
}

// equalValues is reflect.DeepEqual on decoded TOML, but with NaN equal to
// NaN.
func equalValues(a, b any) bool {
	switch a := a.(type) {
	case map[string]any:
		b, ok := b.(map[string]any)
		if !ok || len(a) != len(b) {
			return false
		}
		for k, v := range a {
			if w, ok := b[k]; !ok || !equalValues(v, w) {
				return false
			}
		}
		return true
	case []any:
		b, ok := b.([]any)
		return ok && slices.EqualFunc(a, b, equalValues)
	case float64:
		b, ok := b.(float64)
		return ok && (a == b || math.IsNaN(a) && math.IsNaN(b))
	}
	return reflect.DeepEqual(a, b)
}

func TestSetDPSQuoting(t *testing.T) {
	s := testDPS()
	s.Hostname = `gw "quoted" \ host`
	s.RegistrationID = "reg\"id\nwith\tcontrol\x01\x7f chars ü"
	s.OwnerAuth = `p"a\ss` + "\r\n"
	s.EndorsementAuth = "'single'"
	doc, _ := Parse(nil)
	if err := doc.SetDPS(s, false); err != nil {
		t.Fatal(err)
	}
	if err := checkEdit(nil, doc.Bytes(), s); err != nil {
		t.Error(err)
	}
}

func TestSetDPSCRLF(t *testing.T) {
	in := []byte("# comment\r\nhostname = \"old\"\r\n\r\n[provisioning]\r\nsource = \"dps\"\r\nconnection_string = \"x\"\r\n\r\n[agent]\r\nname = \"edgeAgent\"\r\ntype = \"docker\"\r\n[agent.config]\r\nimage = \"i\"")
	doc, err := Parse(in)
	if err != nil {
		t.Fatal(err)
	}
	s := withOwner(testDPS())
	if err := doc.SetDPS(s, false); err != nil {
		t.Fatal(err)
	}
	out := doc.Bytes()
	if n := bytes.Count(out, []byte("\n")); n != bytes.Count(out, []byte("\r\n")) {
		t.Errorf("output mixes line endings:\n%q", out)
	}
	if err := checkEdit(in, out, s); err != nil {
		t.Error(err)
	}
}

func TestSetDPSRefusesInvalid(t *testing.T) {
	in := []byte("cloud_timeout_sec = 10\n")
	doc, err := Parse(in)
	if err != nil {
		t.Fatal(err)
	}
	if err := doc.SetDPS(testDPS(), false); err == nil || !strings.Contains(err.Error(), "cloud_timeout_sec") {
		t.Errorf("SetDPS on a file with a bad cloud_timeout_sec = %v, want an error naming it", err)
	}
	bad := testDPS()
	bad.IDScope = ""
	if err := doc.SetDPS(bad, false); err == nil {
		t.Error("SetDPS accepted settings without an ID scope")
	}
	if !bytes.Equal(doc.Bytes(), in) {
		t.Errorf("a failed SetDPS changed the document to %q", doc.Bytes())
	}
}

func TestDPSValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		edit func(*DPS)
		ok   bool
	}{
		{"valid", func(*DPS) {}, true},
		{"minimal", func(s *DPS) { *s = DPS{GlobalEndpoint: "https://dps.local:8443/", IDScope: "s", RegistrationID: "r"} }, true},
		{"endpoint plain http", func(s *DPS) { s.GlobalEndpoint = "http://dps.local:8443/" }, false},
		{"max index", func(s *DPS) { s.AuthKeyIndex = 0x7FFFFF }, true},
		{"index too big", func(s *DPS) { s.AuthKeyIndex = 0x800000 }, false},
		{"no scope", func(s *DPS) { s.IDScope = "" }, false},
		{"no registration id", func(s *DPS) { s.RegistrationID = "" }, false},
		{"no endpoint", func(s *DPS) { s.GlobalEndpoint = "" }, false},
		{"endpoint without host", func(s *DPS) { s.GlobalEndpoint = "https://" }, false},
		{"endpoint not http", func(s *DPS) { s.GlobalEndpoint = "amqps://global.azure-devices-provisioning.net" }, false},
		{"bad mode", func(s *DPS) { s.AutoReprovisioningMode = "dynamic" }, false},
		{"payload file", func(s *DPS) { s.PayloadURI = "file:///p.json" }, true},
		{"payload not file", func(s *DPS) { s.PayloadURI = "/p.json" }, false},
		{"not UTF-8", func(s *DPS) { s.OwnerAuth = "\xff" }, false},
	} {
		s := testDPS()
		tc.edit(&s)
		if err := s.Validate(); (err == nil) != tc.ok {
			t.Errorf("%s: Validate(%+v) = %v, want ok %v", tc.name, s, err, tc.ok)
		}
	}
}

// A password that cannot be written is named, never shown.
func TestDPSValidateHidesPasswords(t *testing.T) {
	s := testDPS()
	s.OwnerAuth = "s3cret\xff"
	err := s.Validate()
	if err == nil || strings.Contains(err.Error(), "s3cret") || !strings.Contains(err.Error(), "owner password") {
		t.Errorf("Validate with a non-UTF-8 owner password = %v, want it named and not shown", err)
	}
}

func TestParseError(t *testing.T) {
	in := "hostname = \"gw\"\n\nid = \"unterminated\n"
	_, err := Parse([]byte(in))
	var pe *ParseError
	if !errors.As(err, &pe) || pe.Line != 3 || pe.Column != 19 {
		t.Fatalf("Parse(%q) = %#v, want a *ParseError at line 3, column 19", in, err)
	}
	if got, want := err.Error(), "line 3, column 19: "; !strings.HasPrefix(got, want) {
		t.Errorf("Error() = %q, want prefix %q", got, want)
	}
	for _, in := range []string{"a = 1\na = 2\n", "[t]\n[t]\n", "x = \n"} {
		if _, err := Parse([]byte(in)); !errors.As(err, &pe) || pe.Line == 0 {
			t.Errorf("Parse(%q) = %v, want a *ParseError with a position", in, err)
		}
	}
}

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	doc, err := Load(filepath.Join(dir, "missing.toml"))
	if err != nil || doc.Exists() || len(doc.Bytes()) != 0 || doc.Source() != "" {
		t.Errorf("Load(missing) = %+v, %v; want an empty document that does not exist", doc, err)
	}

	path := filepath.Join(dir, "config.toml")
	corrupt := []byte("hostname = \"gw\"\n[provisioning]\nsource = \"dps\n")
	if err := os.WriteFile(path, corrupt, 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = Load(path)
	var pe *ParseError
	if !errors.As(err, &pe) || pe.Path != path || pe.Line != 3 || pe.Column != 14 {
		t.Fatalf("Load(corrupt) = %#v, want a *ParseError at %s:3:14", err, path)
	}
	if want := fmt.Sprintf("%s:3:14: ", path); !strings.HasPrefix(err.Error(), want) {
		t.Errorf("Error() = %q, want prefix %q", err, want)
	}
	if got, _ := os.ReadFile(path); !bytes.Equal(got, corrupt) {
		t.Errorf("Load changed the corrupt file to %q", got)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 1 {
		t.Errorf("folder holds %d entries after Load, want 1", len(ents))
	}

	if _, err := Load(dir); err == nil {
		t.Error("Load(a folder) succeeded")
	}

	if err := os.WriteFile(path, readIn(t, "tpm-old"), 0o600); err != nil {
		t.Fatal(err)
	}
	doc, err = Load(path)
	if err != nil || !doc.Exists() || doc.Source() != "dps" {
		t.Errorf("Load(tpm-old) = %+v, %v; want an existing dps document", doc, err)
	}
}

func TestProvisioning(t *testing.T) {
	index := uint32(0x100)
	for _, tc := range []struct {
		in   string
		want Provisioning
	}{
		{"", Provisioning{}},
		{"x509", Provisioning{Source: "dps", GlobalEndpoint: DefaultGlobalEndpoint, IDScope: "0ne00X509AA", Method: "x509", RegistrationID: "gw-lab-7"}},
		{"manual", Provisioning{Source: "manual", Hostname: "gw-lab-7"}},
		// A quoted index is no index aziot-tpmd reads.
		{"tpm-old", Provisioning{Source: "dps", GlobalEndpoint: DefaultGlobalEndpoint + "/", IDScope: "0ne00OLD123", Method: "tpm", RegistrationID: "gw-lab-7", TCTI: "device", Hostname: "gw-lab-7"}},
		{"inline", Provisioning{Source: "dps", GlobalEndpoint: DefaultGlobalEndpoint, IDScope: "0ne00OLD123", Method: "tpm", RegistrationID: "gw-lab-7", TCTI: "device", AuthKeyIndex: &index}},
	} {
		doc, err := Parse(readIn(t, tc.in))
		if err != nil {
			t.Fatal(err)
		}
		if got := doc.Provisioning(); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("Provisioning(%s) = %+v, want %+v", tc.in, got, tc.want)
		}
	}
}

func FuzzParse(f *testing.F) {
	ents, err := os.ReadDir(filepath.Join("testdata", "in"))
	if err != nil {
		f.Fatal(err)
	}
	for _, e := range ents {
		f.Add(readIn(f, strings.TrimSuffix(e.Name(), ".toml")))
	}
	for _, tc := range validateTests {
		f.Add([]byte(tc.in))
	}
	for _, in := range layouts() {
		f.Add([]byte(in))
	}
	f.Add([]byte("x = \"\"\"\n# not a comment\"\"\"\n[provisioning.authentication]\n\n[t]\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		doc, err := Parse(data)
		if err != nil {
			if pe := (*ParseError)(nil); !errors.As(err, &pe) {
				t.Fatalf("Parse(%q) = %v, not a *ParseError", data, err)
			}
			return
		}
		s := withOwner(testDPS())
		if err := doc.SetDPS(s, true); err != nil {
			if !bytes.Equal(doc.Bytes(), data) {
				t.Fatalf("a failed SetDPS (%v) changed the document", err)
			}
			if ownedProblemsOnly(data) {
				t.Fatalf("SetDPS on %q = %v, though everything it does not own is valid", data, err)
			}
			return
		}
		if err := checkEdit(data, doc.Bytes(), s); err != nil {
			t.Fatalf("SetDPS on %q: %v", data, err)
		}
	})
}

// ownedProblemsOnly reports whether Validate finds no problem in data
// outside what SetDPS with hostname and auto_reprovisioning_mode owns.
func ownedProblemsOnly(data []byte) bool {
	var ve *ValidationError
	if err := Validate(data); err != nil && !errors.As(err, &ve) {
		return false
	}
	for _, p := range ve.Problems {
		path := strings.Split(p.Key, ".")
		if !managed(path) && p.Key != "hostname" && p.Key != "auto_reprovisioning_mode" {
			return false
		}
	}
	return true
}
