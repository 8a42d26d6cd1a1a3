package edgeconfig

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestAppliedRecord(t *testing.T) {
	dir := t.TempDir()
	config, other := filepath.Join(dir, "config.toml"), filepath.Join(dir, "other.toml")
	record := filepath.Join(dir, "state", "applied.json")
	os.WriteFile(config, []byte("hostname = \"a\"\n"), 0o600)
	os.WriteFile(other, []byte("hostname = \"a\"\n"), 0o600)
	if Applied(record, config) {
		t.Fatal("Applied without a record = true")
	}
	if err := RecordApplied(record, config, "iotedge", false, time.Unix(0, 0)); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(record); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("record: %v, want mode 0600", err)
	}
	if !Applied(record, config) {
		t.Error("Applied after RecordApplied = false")
	}
	if Applied(record, other) {
		t.Error("Applied(another path with the same content) = true")
	}
	os.WriteFile(config, []byte("hostname = \"b\"\n"), 0o600)
	if Applied(record, config) {
		t.Error("Applied after the file changed = true")
	}
	os.WriteFile(record, []byte("{"), 0o600)
	if Applied(record, other) || Applied(record, config) {
		t.Error("Applied with a corrupt record = true")
	}
}
