package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/edgetpm/edgetpm/deploy/lab"
	"github.com/edgetpm/edgetpm/internal/cli"
	"github.com/edgetpm/edgetpm/internal/emulator/dpsemu"
)

// lab hosts prints the lab's lines, writes them into a hosts file once and
// takes them out again, leaving the file's other lines alone.
func TestLabHosts(t *testing.T) {
	dir := t.TempDir()
	var out strings.Builder
	if err := run(t.Context(), []string{"lab", "hosts", "--state-dir", dir}, &out, &out); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{dpsemu.DefaultServiceHostName, lab.Hub} {
		if want := lab.LoopbackAddr(name).String() + "\t" + name + "\n"; !strings.Contains(out.String(), want) {
			t.Errorf("lab hosts printed %q, want the line %q", out.String(), want)
		}
	}
	file := filepath.Join(t.TempDir(), "hosts")
	const orig = "127.0.0.1 localhost\n"
	if err := os.WriteFile(file, []byte(orig), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, step := range []struct {
		flag, want string
	}{
		{"--write", "wrote"},
		{"--write", "already"},
		{"--remove", "took"},
		{"--remove", "already"},
	} {
		var out strings.Builder
		if err := run(t.Context(), []string{"lab", "hosts", "--state-dir", dir, "--file", file, step.flag}, &out, &out); err != nil || !strings.Contains(out.String(), step.want) {
			t.Fatalf("lab hosts %s = %v, printed %q; want %q in it", step.flag, err, out.String(), step.want)
		}
		b, _ := os.ReadFile(file)
		if !strings.HasPrefix(string(b), orig) {
			t.Fatalf("after lab hosts %s the file is %q, want %q kept", step.flag, b, orig)
		}
	}
	if b, _ := os.ReadFile(file); string(b) != orig {
		t.Errorf("after --remove the file is %q, want %q", b, orig)
	}
	if err := run(t.Context(), []string{"lab", "hosts", "--write", "--remove"}, &out, &out); !cli.IsUsage(err) {
		t.Errorf("lab hosts --write --remove = %v, want a usage error", err)
	}
}
