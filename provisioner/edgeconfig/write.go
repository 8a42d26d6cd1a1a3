package edgeconfig

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"time"

	"github.com/aymanbagabas/go-udiff"

	"github.com/edgetpm/edgetpm/internal/atomicfile"
)

// backupLayout names backups; UTC, so that they sort by time.
const backupLayout = "20060102T150405Z"

// Write replaces the file at path with data, atomically, mode 0600 and, when
// running as root, owned by root: config.toml holds secrets and only
// "iotedge config apply", run as root, reads it (docs/edge-protocol.md#host-provisioning-file).
// The previous file is first copied to PATH.bak-<UTC time of now>, also
// 0600, with a -2, -3, ... suffix when a backup of that second exists: one
// is never overwritten. When the file
// already holds data, Write does nothing and reports changed false. On
// error the file at path is as it was.
func Write(path string, data []byte, now time.Time) (backup string, changed bool, err error) {
	old, err := os.ReadFile(path)
	switch {
	case err == nil && bytes.Equal(old, data):
		return "", false, nil
	case err == nil:
		if backup, err = freeName(path + ".bak-" + now.UTC().Format(backupLayout)); err != nil {
			return "", false, fmt.Errorf("back up %s: %w", path, err)
		}
		if err := writeRoot(backup, old); err != nil {
			return "", false, fmt.Errorf("back up %s: %w", path, err)
		}
	case !errors.Is(err, fs.ErrNotExist):
		return "", false, fmt.Errorf("write IoT Edge config: %w", err)
	}
	if err := writeRoot(path, data); err != nil {
		if backup != "" {
			os.Remove(backup)
		}
		return "", false, err
	}
	return backup, true, nil
}

// freeName is name, or name-2, name-3, ... if that is taken.
func freeName(name string) (string, error) {
	for n := 1; ; n++ {
		try := name
		if n > 1 {
			try = fmt.Sprintf("%s-%d", name, n)
		}
		_, err := os.Lstat(try)
		if errors.Is(err, fs.ErrNotExist) {
			return try, nil
		}
		if err != nil {
			return "", err
		}
	}
}

func writeRoot(path string, data []byte) error {
	if err := atomicfile.WriteFile(path, data, 0o600); err != nil {
		return err
	}
	// A file a root process creates is root's already; this only undoes a
	// setgid folder's group.
	if os.Geteuid() == 0 {
		return os.Chown(path, 0, 0)
	}
	return nil
}

// Diff returns a unified diff from old, the file at path as it is (nil
// when there is none), to new, or "" when they are equal. An existing
// file's diff is headed "path (current)" and "path (proposed)"; a new
// file's "/dev/null" and "path (new file)". A diff goes to terminals and
// logs, so secrets are shown as "<redacted N>", N telling apart the
// different values (see redact); a side that is not TOML is not shown at
// all.
func Diff(path string, old, new []byte) string {
	if old != nil && bytes.Equal(old, new) {
		return ""
	}
	from, to := path+" (current)", path+" (proposed)"
	if old == nil {
		from, to = "/dev/null", path+" (new file)"
	}
	r := redactor{ids: map[string]int{}}
	ro, rn := r.redact(old), r.redact(new)
	if ro == rn {
		// Both unparsable: still a change.
		rn += "# (differs in what is not shown)\n"
	}
	return udiff.Unified(from, to, ro, rn)
}
