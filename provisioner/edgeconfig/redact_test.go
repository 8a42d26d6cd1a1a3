package edgeconfig

import (
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/pelletier/go-toml/v2"
)

// The forms a TOML string can take, each as it would hold s, or false when
// it cannot.
var stringForms = []func(s string) (string, bool){
	func(s string) (string, bool) { return quote(s), true },
	func(s string) (string, bool) {
		return "'" + s + "'", !strings.ContainsAny(s, "'\r\n") && !hasControl(s, false)
	},
	func(s string) (string, bool) {
		// A multi-line basic string; a newline right after the opening
		// quotes is trimmed.
		q := quote(s)
		return `"""` + "\n" + q[1:len(q)-1] + `"""`, true
	},
	func(s string) (string, bool) {
		return "'''" + s + "'''", !strings.Contains(s, "'''") && !strings.HasSuffix(s, "'") && !strings.Contains(s, "\r") && !hasControl(s, true)
	},
	func(s string) (string, bool) {
		// A multi-line basic string with a line-ending backslash.
		q := quote(s)
		return `"""\` + "\n   " + q[1:len(q)-1] + `"""`, true
	},
}

func hasControl(s string, newlineOK bool) bool {
	for _, r := range s {
		if (r < 0x20 && r != '\t' && !(newlineOK && r == '\n')) || r == 0x7F {
			return true
		}
	}
	return false
}

// The places a secret can be written, each as a document holding value v
// (already in TOML form).
var secretPlaces = []func(v string) string{
	func(v string) string { return "[tpm.hierarchy_authorization]\nendorsement = " + v + "\n" },
	func(v string) string { return "[tpm.hierarchy_authorization]\nowner = " + v + " # old\n" },
	func(v string) string { return "[tpm.hierarchy_authorization]\n\"owner\" = " + v + "\n" },
	func(v string) string { return "[tpm.hierarchy_authorization]\n'endorsement' = " + v + "\n" },
	func(v string) string { return "[tpm]\nhierarchy_authorization.owner = " + v + "\n" },
	func(v string) string { return "[tpm]\n\"hierarchy_authorization\" . \"owner\" = " + v + "\n" },
	func(v string) string { return "tpm.hierarchy_authorization.endorsement = " + v + "\n" },
	func(v string) string { return "[\"tpm\".'hierarchy_authorization']\nowner=" + v + "\n" },
	func(v string) string { return "[ tpm . hierarchy_authorization ]\nowner = " + v + "\n" },
	func(v string) string { return "[tpm]\nhierarchy_authorization = { owner = " + v + " }\n" },
	func(v string) string {
		return "[tpm]\nhierarchy_authorization = { endorsement = \"\", \"owner\" = " + v + " }\n"
	},
	func(v string) string {
		return "tpm = { tcti = \"device\", hierarchy_authorization = { owner = " + v + " } }\n"
	},
	func(v string) string { return "[tpm]\nhierarchy_authorization = { owner = [" + v + "] }\n" },
	func(v string) string { return "[provisioning]\nsource = \"manual\"\nconnection_string = " + v + "\n" },
	func(v string) string {
		return "[provisioning]\nsource = \"manual\"\n[provisioning.authentication]\nmethod = \"sas\"\ndevice_id_pk = { value = " + v + " }\n"
	},
	func(v string) string {
		return "[provisioning.attestation]\nmethod = \"symmetric_key\"\nsymmetric_key.value = " + v + "\n"
	},
}

// secretShown reports whether Diff shows secret, in any spelling, when a
// document holds it at place in form; ok is false when that cannot be
// written or secret is in the document without it.
func secretShown(t *testing.T, secret string, form, place int) (shown, ok bool) {
	v, can := stringForms[form%len(stringForms)](secret)
	if !can {
		return false, false
	}
	doc := "hostname = \"gw-7\"\n" + secretPlaces[place%len(secretPlaces)](v) + "[agent]\nname = \"edgeAgent\"\n"
	var decoded map[string]any
	if err := toml.Unmarshal([]byte(doc), &decoded); err != nil {
		t.Fatalf("test document does not parse: %v\n%s", err, doc)
	}
	empty, _ := stringForms[0]("")
	without := "hostname = \"gw-7\"\n" + secretPlaces[place%len(secretPlaces)](empty) + "[agent]\nname = \"edgeAgent\"\n"
	base := Diff("/etc/aziot/config.toml", []byte(without), nil) + Diff("/etc/aziot/config.toml", nil, []byte(without))
	for _, d := range []string{Diff("/etc/aziot/config.toml", []byte(doc), nil), Diff("/etc/aziot/config.toml", nil, []byte(doc)),
		Diff("/etc/aziot/config.toml", []byte(doc), []byte(without))} {
		spellings := []string{secret, v}
		for _, line := range strings.Split(v, "\n") {
			// Each line of the token, without its quotes.
			spellings = append(spellings, strings.Trim(line, "\"' \\"))
		}
		for _, spelling := range spellings {
			if len(spelling) >= 3 && !strings.Contains(base, spelling) && strings.Contains(d, spelling) {
				t.Logf("Diff shows %q:\n%s", spelling, d)
				return true, true
			}
		}
	}
	return false, true
}

func TestDiffRedactsEveryForm(t *testing.T) {
	for _, secret := range []string{"old-hierarchy-password", "pw with 'quotes' and \"double\"", "multi\nline\npassword", "tab\there", "ünïcödé-pässwörd", `back\slash`} {
		for form := range stringForms {
			for place := range secretPlaces {
				if shown, ok := secretShown(t, secret, form, place); ok && shown {
					t.Errorf("Diff shows the secret %q written in form %d at place %d", secret, form, place)
				}
			}
		}
	}
}

// A changed secret is a change, shown without its values.
func TestDiffShowsChangedSecret(t *testing.T) {
	old := []byte("[tpm.hierarchy_authorization]\nowner = \"one-secret\"\n")
	new := []byte("[tpm.hierarchy_authorization]\nowner = \"two-secret\"\n")
	d := Diff("c.toml", old, new)
	if d == "" || strings.Contains(d, "one-secret") || strings.Contains(d, "two-secret") {
		t.Errorf("Diff of a changed password = %q, want a change without the values", d)
	}
	if d := Diff("c.toml", old, old); d != "" {
		t.Errorf("Diff(equal) = %q, want \"\"", d)
	}
}

// A file that is not TOML is not shown: it may hold passwords anywhere.
func TestDiffOfUnparsableFile(t *testing.T) {
	old := []byte("[tpm.hierarchy_authorization]\nowner = \"unterminated-secret\n")
	d := Diff("c.toml", old, []byte("hostname = \"x\"\n"))
	if strings.Contains(d, "unterminated-secret") || !strings.Contains(d, `hostname = "x"`) {
		t.Errorf("Diff from an unparsable file = %q", d)
	}
}

func FuzzDiffRedacts(f *testing.F) {
	for _, secret := range []string{"old-hierarchy-password", "pw with 'quotes'", "multi\nline", `back\slash`} {
		for form := range stringForms {
			for place := range secretPlaces {
				f.Add(secret, uint8(form), uint8(place))
			}
		}
	}
	f.Fuzz(func(t *testing.T, secret string, form, place uint8) {
		if !utf8.ValidString(secret) {
			return
		}
		if shown, ok := secretShown(t, secret, int(form), int(place)); ok && shown {
			t.Errorf("Diff shows the secret %q written in form %d at place %d", secret, form%uint8(len(stringForms)), place%uint8(len(secretPlaces)))
		}
	})
}

// FuzzDiff runs Diff on any two inputs: it never panics, is empty exactly
// when they are equal, and never shows a line of an input that does not
// parse.
func FuzzDiff(f *testing.F) {
	for _, tc := range validateTests {
		f.Add([]byte(tc.in), []byte(minimal))
	}
	f.Add([]byte("owner = '''x\n"), []byte("a = 1\n"))
	f.Fuzz(func(t *testing.T, old, new []byte) {
		d := Diff("c.toml", old, new)
		if (d == "") != (string(old) == string(new)) {
			t.Errorf("Diff(%q, %q) = %q", old, new, d)
		}
		var v map[string]any
		if toml.Unmarshal(old, &v) != nil {
			for _, line := range strings.Split(string(old), "\n") {
				if len(line) > 8 && !strings.Contains(string(new), line) && strings.Contains(d, "-"+line+"\n") {
					t.Errorf("Diff shows line %q of an unparsable file", line)
				}
			}
		}
	})
}

// Secrets that are not under a secret key are found by what they are:
// connection strings' keys, SAS signatures, passwords in URLs, PKCS#11
// PINs, and any key whose name says secret; added or removed, in a value
// or a comment.
func TestDiffRedactsSecretsByKind(t *testing.T) {
	for _, tc := range []struct{ doc, secret string }{
		{"[agent.env]\nIotHubConnectionString = \"HostName=h.azure-devices.net;DeviceId=d;SharedAccessKey=c2VjcmV0a2V5\"\n", "c2VjcmV0a2V5"},
		{"[agent.env]\nconn = 'HostName=h;DeviceId=d;sharedaccesskey = a2V5Mg=='\n", "a2V5Mg"},
		{"[agent.env]\nAUTH = \"SharedAccessSignature sr=h%2Fdevices%2Fd&sig=s1gn4tureXYZ%3D&se=1700000000\"\n", "s1gn4tureXYZ"},
		{"[agent.env]\nurl = \"https://h.example/upload?sv=2021&sig=AbCsigValue123&se=2030\"\n", "AbCsigValue123"},
		{"[agent.env]\nhttps_proxy = \"http://operator:pr0xyp4ss@proxy.local:3128\"\n", "pr0xyp4ss"},
		{"[aziot_keys]\npkcs11_base_slot = \"pkcs11:token=Key pairs?pin-value=98765\"\n", "98765"},
		{"[preloaded_keys]\ndevice-id = \"pkcs11:object=device-id;type=private?pin-value=24680\"\n", "24680"},
		{"[agent.config.auth]\nserveraddress = \"acr.io\"\nusername = \"u\"\npassword = \"regpassw0rd\"\n", "regpassw0rd"},
		{"[agent.env]\nRegistryPassword = \"envpassw0rd\"\nAPI_KEY = \"apik3yvalue\"\nclientSecret = \"cl13ntsecret\"\nAccessToken = \"t0kenvalue\"\n", "envpassw0rd apik3yvalue cl13ntsecret t0kenvalue"},
		{"[cert_issuance.est.auth]\nusername = \"u\"\npassword = \"estpassw0rd\"\n", "estpassw0rd"},
		{"# old: HostName=h;DeviceId=d;SharedAccessKey=c29tZWtleQ==\nhostname = \"gw\"\n", "c29tZWtleQ"},
		{"hostname = \"gw\" # SharedAccessSignature sr=x&sig=c0mmentsig&se=1\n", "c0mmentsig"},
	} {
		without := "hostname = \"other\"\n"
		for _, d := range []string{Diff("/etc/aziot/config.toml", []byte(tc.doc), []byte(without)), Diff("/etc/aziot/config.toml", []byte(without), []byte(tc.doc))} {
			if !strings.Contains(d, "redacted") {
				t.Errorf("Diff of %q shows nothing redacted:\n%s", tc.doc, d)
			}
			for _, s := range strings.Fields(tc.secret) {
				if strings.Contains(d, s) {
					t.Errorf("Diff shows the secret %q:\n%s", s, d)
				}
			}
		}
	}
	// What is not a secret stays readable.
	doc := "[tpm]\nauth_key_index = 0x100\ntcti = \"device:/dev/tpmrm0\"\n[agent.config]\nimage = \"mcr.microsoft.com/azureiotedge-agent:1.5\"\n[agent.env]\nstorageFolder = \"/iotedge/storage\"\n"
	d := Diff("c.toml", nil, []byte(doc))
	for _, s := range []string{"0x100", "device:/dev/tpmrm0", "azureiotedge-agent:1.5", "/iotedge/storage"} {
		if !strings.Contains(d, s) {
			t.Errorf("Diff hides %q, which is no secret:\n%s", s, d)
		}
	}
}

// The diff of an existing file is headed by the file as it is and as it
// would be; a file that does not exist yet comes from /dev/null.
func TestDiffHeads(t *testing.T) {
	d := Diff("/etc/aziot/config.toml", []byte("hostname = \"a\"\n"), []byte("hostname = \"b\"\n"))
	if !strings.HasPrefix(d, "--- /etc/aziot/config.toml (current)\n+++ /etc/aziot/config.toml (proposed)\n") {
		t.Errorf("Diff of an existing file is headed:\n%s", d)
	}
	d = Diff("/etc/aziot/config.toml", nil, []byte("hostname = \"b\"\n"))
	if !strings.HasPrefix(d, "--- /dev/null\n+++ /etc/aziot/config.toml (new file)\n") {
		t.Errorf("Diff of a new file is headed:\n%s", d)
	}
	d = Diff("/etc/aziot/config.toml", []byte{}, []byte("hostname = \"b\"\n"))
	if !strings.HasPrefix(d, "--- /etc/aziot/config.toml (current)\n") {
		t.Errorf("Diff of an existing empty file is headed:\n%s", d)
	}
}
