package containerd

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edgetpm/edgetpm/internal/testharness/containerdtest"
)

func TestNew(t *testing.T) {
	t.Parallel()
	d := containerdtest.Start(t)
	c, _ := newClient(t, d)
	v, err := c.Version(t.Context())
	if err != nil || v == "" {
		t.Errorf("Version = %q, %v", v, err)
	}
	if _, err := New(t.Context(), d.Address, WithNamespace("bad namespace")); err == nil {
		t.Error(`New(WithNamespace("bad namespace")) succeeded`)
	}
}

func TestNewFails(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(dir, "missing.sock")
	for _, tc := range []struct {
		name, address, want string
		is                  error
	}{
		{"missing", missing, "containerd socket " + missing + " does not exist", fs.ErrNotExist},
		{"not a socket", file, file + " is not a socket", nil},
		// Docker's API socket, here a fake: HTTP/1, not gRPC.
		{"not containerd", fakeDocker(t, "{}"), "connect to containerd: failed to dial", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(t.Context(), time.Second)
			defer cancel()
			c, err := New(ctx, tc.address)
			if err == nil {
				c.Close()
				t.Fatalf("New(%s) succeeded", tc.address)
			}
			if !strings.Contains(err.Error(), tc.want) || tc.is != nil && !errors.Is(err, tc.is) {
				t.Errorf("New(%s) = %v, want an error containing %q", tc.address, err, tc.want)
			}
		})
	}
}
