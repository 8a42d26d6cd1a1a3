package main

import (
	"errors"
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

// A connection string in the state folder naming a host that is not a lab
// name stops lab hosts --write before it touches the hosts file; --remove,
// which needs no names, still works.
func TestLabHostsRefusesOtherNames(t *testing.T) {
	dir := t.TempDir()
	cs := "HostName=github.com;SharedAccessKeyName=provisioningserviceowner;SharedAccessKey=a2V5"
	if err := os.WriteFile(filepath.Join(dir, lab.DPSConnFile), []byte(cs), 0o600); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "hosts")
	const orig = "127.0.0.1 localhost\n"
	if err := os.WriteFile(file, []byte(orig), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{{"--write"}, {}} {
		var out strings.Builder
		err := run(t.Context(), append([]string{"lab", "hosts", "--state-dir", dir, "--file", file}, args...), &out, &out)
		if !errors.Is(err, lab.ErrNotLabName) || !strings.Contains(err.Error(), "github.com") || strings.Contains(out.String(), "github.com") {
			t.Errorf("lab hosts %q = %v, printed %q; want a not-a-lab-name error and nothing printed", args, err, out.String())
		}
	}
	if b, _ := os.ReadFile(file); string(b) != orig {
		t.Errorf("hosts file = %q, want %q untouched", b, orig)
	}
	var out strings.Builder
	if err := run(t.Context(), []string{"lab", "hosts", "--state-dir", dir, "--file", file, "--remove"}, &out, &out); err != nil {
		t.Errorf("lab hosts --remove = %v", err)
	}
}
