package edgeconfig

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestCheckFolder(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "file")
	os.WriteFile(file, nil, 0o600)
	for _, tc := range []struct {
		path   string
		noDir  bool
		errSub string
	}{
		{filepath.Join(dir, "config.toml"), false, ""},
		{filepath.Join(dir, "aziot", "config.toml"), true, filepath.Join(dir, "aziot") + " does not exist"},
		{filepath.Join(file, "config.toml"), false, "is not a folder"},
	} {
		err := CheckFolder(tc.path)
		if errors.Is(err, ErrNoFolder) != tc.noDir || (tc.errSub == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tc.errSub)) {
			t.Errorf("CheckFolder(%q) = %v, want ErrNoFolder %v and %q", tc.path, err, tc.noDir, tc.errSub)
		}
	}
}
