package edgeconfig

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/edgetpm/edgetpm/internal/atomicfile"
)

// AppliedRecord is what was last applied: kept by the caller in its own
// state folder, because 'config apply' writes its output under /etc/aziot
// whatever config.toml it is given (docs/edge-protocol.md#host-provisioning-file),
// so nothing beside a file at another path tells whether it was applied.
type AppliedRecord struct {
	Config string    `json:"config"` // absolute path of the file applied
	SHA256 string    `json:"sha256"` // of its content, hex
	Tool   string    `json:"tool"`   // iotedge or aziotctl
	Queued bool      `json:"queued"` // handed to a systemd unit, not run here
	At     time.Time `json:"at"`
}

// Applied tells whether the record at record says that config, as it is
// now, was applied. A missing or unreadable record, another path or other
// content mean it was not.
func Applied(record, config string) bool {
	data, err := os.ReadFile(record)
	if err != nil {
		return false
	}
	var r AppliedRecord
	if json.Unmarshal(data, &r) != nil {
		return false
	}
	abs, sum, err := fingerprint(config)
	return err == nil && r.Config == abs && r.SHA256 == sum
}

// RecordApplied saves at record, mode 0600 in a 0700 folder, that config,
// as it is now, was applied by tool (or queued, when queued).
func RecordApplied(record, config, tool string, queued bool, now time.Time) error {
	abs, sum, err := fingerprint(config)
	if err != nil {
		return fmt.Errorf("record the apply of %s: %w", config, err)
	}
	data, err := json.MarshalIndent(AppliedRecord{Config: abs, SHA256: sum, Tool: tool, Queued: queued, At: now.UTC()}, "", "  ")
	if err != nil {
		return fmt.Errorf("record the apply of %s: %w", config, err)
	}
	if err := os.MkdirAll(filepath.Dir(record), 0o700); err != nil {
		return fmt.Errorf("record the apply of %s: %w", config, err)
	}
	return atomicfile.WriteFile(record, append(data, '\n'), 0o600)
}

func fingerprint(config string) (abs, sum string, err error) {
	if abs, err = filepath.Abs(config); err != nil {
		return "", "", err
	}
	data, err := os.ReadFile(abs)
	if err != nil {
		return "", "", err
	}
	h := sha256.Sum256(data)
	return abs, hex.EncodeToString(h[:]), nil
}
