package edgeconfig

import (
	"slices"
	"strings"
	"testing"
)

// layouts mixes the ways TOML can spell the tables SetDPS owns: headers,
// dotted keys from the top or from the parent table, inline tables and
// arrays of tables, in either order. Not all of them parse.
func layouts() []string {
	// A form is top-level keys, keys added to the parent's section and a
	// section of its own.
	type form struct{ root, inParent, section string }
	var (
		none         = form{}
		provisioning = []form{none,
			{section: "[provisioning]\nsource = \"manual\"   # c\nconnection_string = \"c\"\n"},
			{root: "provisioning = { source = \"dps\", id_scope = \"s\" }\n"},
			{root: "provisioning.source = \"dps\"\n"},
		}
		attestation = []form{none,
			{section: "[provisioning.attestation]\nmethod = \"tpm\"\nregistration_id = \"r\"\nidentity_pk = \"k\"\n"},
			{inParent: "attestation.method = \"x509\"\n"},
			{inParent: "attestation = { method = \"tpm\" }\n"},
			{root: "provisioning.attestation.registration_id = \"r\"\n"},
		}
		tpm = []form{none,
			{section: "[tpm]\ntcti = \"x\"\nauth_key_index = \"0x100\"\n"},
			{root: "tpm.tcti = \"x\"\n"},
			{root: "tpm = { tcti = \"x\" }\n"},
			{section: "[[tpm]]\ntcti = \"x\"\n"},
		}
		hierarchy = []form{none,
			{section: "[tpm.hierarchy_authorization]\nowner = \"o\"\n"},
			{inParent: "hierarchy_authorization.owner = \"o\"\n"},
			{root: "tpm.hierarchy_authorization.endorsement = \"e\"\n"},
		}
		other = []form{none, {root: "cloud_retries = 2\n"}, {section: "[moby_runtime]\nnetwork = \"n\"\n"}}
	)
	var inputs []string
	for _, p := range provisioning {
		for _, a := range attestation {
			for _, tp := range tpm {
				for _, h := range hierarchy {
					for _, o := range other {
						if a.inParent != "" && p.section == "" || h.inParent != "" && tp.section == "" {
							continue
						}
						root := o.root + p.root + a.root + tp.root + h.root
						sections := []string{o.section, p.section + a.inParent, a.section, tp.section + h.inParent, h.section}
						inputs = append(inputs, root+strings.Join(sections, "\n"))
						slices.Reverse(sections)
						inputs = append(inputs, root+strings.Join(sections, "\n"))
					}
				}
			}
		}
	}
	return inputs
}

// TestSetDPSLayouts runs SetDPS on every layout that parses.
func TestSetDPSLayouts(t *testing.T) {
	inputs := layouts()
	valid := 0
	for _, in := range inputs {
		if _, err := Parse([]byte(in)); err != nil {
			continue
		}
		valid++
		for _, s := range []DPS{testDPS(), withOwner(testDPS())} {
			doc, _ := Parse([]byte(in))
			if err := doc.SetDPS(s, true); err != nil {
				if ownedProblemsOnly([]byte(in)) {
					t.Errorf("SetDPS on %q = %v", in, err)
				}
				continue
			}
			if err := checkEdit([]byte(in), doc.Bytes(), s); err != nil {
				t.Errorf("SetDPS on %q: %v", in, err)
			}
		}
	}
	if valid < 100 {
		t.Errorf("only %d of %d layouts parse", valid, len(inputs))
	}
}
