package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Whether config.toml was applied follows the config path given: a
// second provision applies nothing wherever the file is, and a file changed
// since its apply (an operator's edit) is applied again. 'iotedge config
// apply' writes its output under /etc/aziot whatever -c says, so nothing
// beside a non-default file tells.
func TestProvisionApplyRecord(t *testing.T) {
	for _, tc := range []struct{ name, config string }{
		{"default layout", filepath.Join("aziot", "config.toml")},
		{"other path", filepath.Join("elsewhere", "iotedge.toml")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := newWorld(t)
			calls := fakeApplyTool(t, 0)
			w.aziot = filepath.Join(t.TempDir(), tc.config)
			if err := os.MkdirAll(filepath.Dir(w.aziot), 0o755); err != nil {
				t.Fatal(err)
			}
			w.env["EDGE_AZIOT_CONFIG"] = w.aziot
			applies := func() int {
				b, _ := os.ReadFile(calls)
				return strings.Count(string(b), "config apply -c "+w.aziot+"\n")
			}
			if _, progress, err := provision(t, w, "--no-wait"); err != nil || applies() != 1 {
				t.Fatalf("provision: %v, %d applies, want 1\n%s", err, applies(), progress)
			}
			// The real tool writes /etc/aziot/*/config.d, never beside the
			// file: nothing beside it may decide.
			os.RemoveAll(filepath.Join(filepath.Dir(w.aziot), "identityd"))
			r, progress, err := provision(t, w, "--no-wait")
			if err != nil || applies() != 1 || r.Changed {
				t.Fatalf("second provision: %v, %d applies, changed %v, want 1 and nothing changed\n%s", err, applies(), r.Changed, progress)
			}
			record := filepath.Join(filepath.Dir(w.env["EDGE_PROVISIONER_STATE"]), "applied.json")
			if fi, err := os.Stat(record); err != nil || fi.Mode().Perm() != 0o600 {
				t.Fatalf("apply record %s: %v, want mode 0600", record, err)
			}

			// An edit outside provision is applied at the next run.
			data, _ := os.ReadFile(w.aziot)
			if err := os.WriteFile(w.aziot, append(data, []byte("# edited by hand\n")...), 0o600); err != nil {
				t.Fatal(err)
			}
			r, progress, err = provision(t, w, "--no-wait")
			if err != nil || applies() != 2 || r.Steps[4].Status != stepChanged {
				t.Fatalf("provision after an edit: %v, %d applies, apply step %+v, want applied again\n%s", err, applies(), r.Steps[4], progress)
			}
		})
	}
}
