package lab

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Outside the repository, lab up runs the edge-provisioner and edge-relay
// installed next to edge-deploy, else those on PATH.
func TestFindInstalled(t *testing.T) {
	fake := func(dir string, names ...string) {
		t.Helper()
		for _, n := range names {
			if err := os.WriteFile(filepath.Join(dir, n), []byte("#!/bin/sh\n"), 0o755); err != nil {
				t.Fatal(err)
			}
		}
	}
	beside, onPath, half, empty := t.TempDir(), t.TempDir(), t.TempDir(), t.TempDir()
	fake(beside, "edge-deploy", "edge-provisioner", "edge-relay")
	fake(onPath, "edge-provisioner", "edge-relay")
	fake(half, "edge-deploy", "edge-provisioner")

	for _, tc := range []struct {
		name, exe, path string
		want            string // the folder both are found in; "" for an error
	}{
		{"beside itself", filepath.Join(beside, "edge-deploy"), onPath, beside},
		{"on PATH", filepath.Join(empty, "edge-deploy"), empty + ":" + onPath, onPath},
		{"one beside itself, both on PATH", filepath.Join(half, "edge-deploy"), onPath, onPath},
		{"nowhere", filepath.Join(empty, "edge-deploy"), empty, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("PATH", tc.path)
			b, err := findInstalled(tc.exe)
			if tc.want == "" {
				if err == nil || !strings.Contains(err.Error(), "--bin") {
					t.Fatalf("findInstalled(%s) = %+v, %v; want an error that names --bin", tc.exe, b, err)
				}
				return
			}
			if err != nil {
				t.Fatalf("findInstalled(%s) = %v", tc.exe, err)
			}
			want := binaries{provisioner: filepath.Join(tc.want, "edge-provisioner"), relay: filepath.Join(tc.want, "edge-relay")}
			if b != want {
				t.Errorf("findInstalled(%s) = %+v, want %+v", tc.exe, b, want)
			}
		})
	}
}
