package main

import (
	"bytes"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/edgetpm/edgetpm/internal/cli"
)

func TestImageUsage(t *testing.T) {
	noModule := t.TempDir()
	tests := []struct {
		args []string
		want string // in the error
	}{
		{[]string{"image"}, "image: want build"},
		{[]string{"image", "push"}, "image: want build"},
		{[]string{"image", "build", "--platform", "windows/amd64"}, `unsupported platform "windows/amd64": want linux/amd64, linux/arm64, linux/arm/v7`},
		{[]string{"image", "build", "--platform", "linux/amd64", "--platform", "linux/arm/v9"}, `unsupported platform "linux/arm/v9"`},
		{[]string{"image", "build", "--platform"}, "flag needs an argument: -platform"},
		{[]string{"image", "build", "linux/amd64"}, `unexpected argument "linux/amd64"`},
		{[]string{"image", "build", "--src", noModule}, "--src " + noModule},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			err := run(t.Context(), tt.args, &stdout, &stderr)
			if !cli.IsUsage(err) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("run(%q) = %v, want a usage error with %q", tt.args, err, tt.want)
			}
			if cli.ExitCode(err) != 2 || stdout.Len() != 0 {
				t.Errorf("run(%q): exit %d, stdout %q; want 2 and nothing", tt.args, cli.ExitCode(err), stdout.String())
			}
		})
	}
}

func TestImageHelp(t *testing.T) {
	var stdout, stderr bytes.Buffer
	err := run(t.Context(), []string{"image", "build", "--help"}, &stdout, &stderr)
	if cli.ExitCode(err) != 0 || !strings.Contains(stdout.String(), "usage: edge-deploy image build") || !strings.Contains(stdout.String(), "-platform") || stderr.Len() > 0 {
		t.Fatalf("image build --help = %v, stdout:\n%s\nstderr:\n%s", err, stdout.String(), stderr.String())
	}
}

// TestImageBuild builds one platform through the command line.
func TestImageBuild(t *testing.T) {
	out := t.TempDir()
	var stdout, stderr bytes.Buffer
	err := run(t.Context(), []string{"image", "build", "--src", "..", "--out", out, "--platform", "linux/arm64", "--name", "example.com/relay:1.0", "--version", "1.0"}, &stdout, &stderr)
	if err != nil {
		t.Fatalf("image build: %v\n%s", err, stderr.String())
	}
	archive := filepath.Join(out, "edge-relay-linux-arm64.docker.tar")
	lines := []*regexp.Regexp{
		regexp.MustCompile(`^linux/arm64 +sha256:[0-9a-f]{64} +[0-9]+\.[0-9]{2} MB  ` + regexp.QuoteMeta(archive) + `$`),
		regexp.MustCompile(`^OCI index +sha256:[0-9a-f]{64} +` + regexp.QuoteMeta(filepath.Join(out, "edge-relay.oci.tar")) + `$`),
	}
	got := strings.Split(strings.TrimSuffix(stdout.String(), "\n"), "\n")
	if len(got) != len(lines) {
		t.Fatalf("image build printed:\n%s\nwant %d lines", stdout.String(), len(lines))
	}
	for i, re := range lines {
		if !re.MatchString(got[i]) {
			t.Errorf("line %d = %q, want %s", i+1, got[i], re)
		}
	}
	b, err := os.ReadFile(archive)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(b, []byte(`"RepoTags":["example.com/relay:1.0"]`)) {
		t.Errorf("%s is not tagged example.com/relay:1.0", archive)
	}
}
