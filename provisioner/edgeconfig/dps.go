package edgeconfig

import (
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/edgetpm/edgetpm/provisioner/dps"
)

// DefaultPath is where aziot's services and "iotedge config apply" look.
const DefaultPath = "/etc/aziot/config.toml"

// DefaultGlobalEndpoint is the public DPS device endpoint.
const DefaultGlobalEndpoint = "https://global.azure-devices-provisioning.net"

// maxAuthKeyIndex bounds [tpm] auth_key_index: aziot-tpmd adds it to the
// first owner persistent handle, 0x81000000, and the owner range ends at
// 0x817FFFFF (docs/edge-protocol.md#host-provisioning-file).
const maxAuthKeyIndex = 0x7FFFFF

// DPS is the part of config.toml the provisioner owns: DPS provisioning with
// TPM attestation and the TPM aziot-tpmd opens.
type DPS struct {
	// Hostname is the device's hostname for IoT Edge; "" leaves the file's
	// as it is (absent means aziot uses the machine's).
	Hostname string
	// AutoReprovisioningMode is "Dynamic", "AlwaysOnStartup" or
	// "OnErrorOnly"; "" leaves the file's as it is.
	AutoReprovisioningMode string
	GlobalEndpoint         string // required https URL (dps.CheckEndpoint)
	IDScope                string // required
	RegistrationID         string // required; must equal the DPS enrollment's
	// PayloadURI is an optional file:// URI of the custom payload sent with
	// the registration.
	PayloadURI string
	// TCTI names the TPM, e.g. "device", "device:/dev/tpmrm0" or
	// "swtpm:host=127.0.0.1,port=2321"; "" lets the TCTI loader try its
	// defaults.
	TCTI string
	// AuthKeyIndex is where aziot-tpmd keeps the hub key, as an offset from
	// the persistent handle 0x81000000; at most 0x7FFFFF.
	AuthKeyIndex uint32
	// EndorsementAuth and OwnerAuth are the TPM hierarchy passwords; when
	// both are "" the [tpm.hierarchy_authorization] table is removed.
	EndorsementAuth, OwnerAuth string
}

// Validate checks that s can be written to config.toml and accepted by
// aziot's services.
func (s DPS) Validate() error {
	for _, f := range []struct{ name, v string }{
		{"hostname", s.Hostname}, {"global endpoint", s.GlobalEndpoint}, {"ID scope", s.IDScope},
		{"registration ID", s.RegistrationID}, {"payload URI", s.PayloadURI}, {"TCTI", s.TCTI},
		{"endorsement password", s.EndorsementAuth}, {"owner password", s.OwnerAuth},
	} {
		// TOML files are UTF-8; anything else cannot be written. The
		// value is not shown: it may be a password.
		if !utf8.ValidString(f.v) {
			return fmt.Errorf("%s is not valid UTF-8", f.name)
		}
	}
	if err := dps.CheckEndpoint(s.GlobalEndpoint); err != nil {
		return err
	}
	switch {
	case s.AutoReprovisioningMode != "" && !oneOf(s.AutoReprovisioningMode, reprovisioningModes...):
		return fmt.Errorf("auto reprovisioning mode %q is not one of %s", s.AutoReprovisioningMode, strings.Join(reprovisioningModes, ", "))
	case s.IDScope == "":
		return errors.New("no DPS ID scope")
	case s.RegistrationID == "":
		return errors.New("no DPS registration ID")
	case s.PayloadURI != "" && !strings.HasPrefix(s.PayloadURI, "file://"):
		return fmt.Errorf("payload URI %q is not a file:// URI", s.PayloadURI)
	case s.AuthKeyIndex > maxAuthKeyIndex:
		return fmt.Errorf("auth key index %#x is above %#x", s.AuthKeyIndex, maxAuthKeyIndex)
	}
	return nil
}

var reprovisioningModes = []string{"Dynamic", "AlwaysOnStartup", "OnErrorOnly"}

func oneOf(s string, choices ...string) bool {
	for _, c := range choices {
		if s == c {
			return true
		}
	}
	return false
}

// A table is one TOML table s sets, with its keys in the order they are
// written. The root table has no path.
type table struct {
	path   []string
	leaves []leaf
}

// A leaf is one key s sets.
type leaf struct {
	name string
	text string // the value as written
	// v is the value as go-toml decodes it; where the file already holds an
	// equal string or integer, its spelling is kept.
	v any
}

func stringLeaf(name, v string) leaf { return leaf{name, quote(v), v} }

// tables lists what s sets, in the order a fresh file holds it.
func (s DPS) tables() []table {
	var root table
	if s.Hostname != "" {
		root.leaves = append(root.leaves, stringLeaf("hostname", s.Hostname))
	}
	if s.AutoReprovisioningMode != "" {
		root.leaves = append(root.leaves, stringLeaf("auto_reprovisioning_mode", s.AutoReprovisioningMode))
	}
	prov := table{path: []string{"provisioning"}, leaves: []leaf{
		stringLeaf("source", "dps"),
		stringLeaf("global_endpoint", s.GlobalEndpoint),
		stringLeaf("id_scope", s.IDScope),
	}}
	if s.PayloadURI != "" {
		prov.leaves = append(prov.leaves, leaf{"payload", "{ uri = " + quote(s.PayloadURI) + " }", map[string]any{"uri": s.PayloadURI}})
	}
	ts := []table{root, prov,
		{path: []string{"provisioning", "attestation"}, leaves: []leaf{
			stringLeaf("method", "tpm"),
			stringLeaf("registration_id", s.RegistrationID),
		}},
		{path: []string{"tpm"}, leaves: []leaf{
			stringLeaf("tcti", s.TCTI),
			{"auth_key_index", hexIndex(s.AuthKeyIndex), int64(s.AuthKeyIndex)},
		}},
	}
	if s.EndorsementAuth != "" || s.OwnerAuth != "" {
		ts = append(ts, table{path: []string{"tpm", "hierarchy_authorization"}, leaves: []leaf{
			stringLeaf("endorsement", s.EndorsementAuth),
			stringLeaf("owner", s.OwnerAuth),
		}})
	}
	return ts
}

// want is what go-toml decodes from a file holding s: the top-level values
// s sets, with the provisioning and tpm tables whole.
func (s DPS) want() map[string]any {
	w := map[string]any{}
	for _, t := range s.tables() {
		m := w
		for _, k := range t.path {
			if m[k] == nil {
				m[k] = map[string]any{}
			}
			m = m[k].(map[string]any)
		}
		for _, l := range t.leaves {
			m[l.name] = l.v
		}
	}
	return w
}

// hexIndex writes an auth key index as the template and aziot's tests do,
// 0x00_01_00: the handle's bytes are easy to read and the value is a TOML
// integer, which aziot-tpmd requires.
func hexIndex(n uint32) string {
	h := fmt.Sprintf("%06X", n)
	return "0x" + h[0:2] + "_" + h[2:4] + "_" + h[4:6]
}

// quote writes s as a TOML basic string.
func quote(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for _, r := range s {
		switch r {
		case '"':
			b.WriteString(`\"`)
		case '\\':
			b.WriteString(`\\`)
		case '\b':
			b.WriteString(`\b`)
		case '\t':
			b.WriteString(`\t`)
		case '\n':
			b.WriteString(`\n`)
		case '\f':
			b.WriteString(`\f`)
		case '\r':
			b.WriteString(`\r`)
		default:
			if r < 0x20 || r == 0x7F {
				fmt.Fprintf(&b, `\u%04X`, r)
			} else {
				b.WriteRune(r)
			}
		}
	}
	b.WriteByte('"')
	return b.String()
}
