package edgeconfig

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// fakeTool writes a stand-in for iotedge or aziotctl, which cannot be
// installed here: it records its arguments in NAME.args, prints to stdout
// and stderr and exits with code.
func fakeTool(t *testing.T, dir, name string, code int) {
	t.Helper()
	script := fmt.Sprintf("#!/bin/sh\necho \"$@\" > '%s.args'\necho %s applied\necho %s warned >&2\nexit %d\n",
		filepath.Join(dir, name), name, name, code)
	if err := os.WriteFile(filepath.Join(dir, name), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
}

func ranWith(dir, name string) string {
	b, _ := os.ReadFile(filepath.Join(dir, name+".args"))
	return strings.TrimSpace(string(b))
}

func TestApply(t *testing.T) {
	for _, tc := range []struct {
		name     string
		tools    map[string]int // exit code of each tool on PATH
		wantTool string
		wantErr  bool
	}{
		{"iotedge preferred", map[string]int{"iotedge": 0, "aziotctl": 0}, "iotedge", false},
		{"aziotctl when no iotedge", map[string]int{"aziotctl": 0}, "aziotctl", false},
		{"iotedge fails", map[string]int{"iotedge": 3, "aziotctl": 0}, "iotedge", true},
	} {
		dir := t.TempDir()
		for name, code := range tc.tools {
			fakeTool(t, dir, name, code)
		}
		t.Setenv("PATH", dir)
		var out bytes.Buffer
		tool, err := Apply(t.Context(), "/etc/aziot/config.toml", &out)
		if tool != tc.wantTool || (err != nil) != tc.wantErr {
			t.Errorf("%s: Apply = %q, %v; want %q, error %v", tc.name, tool, err, tc.wantTool, tc.wantErr)
		}
		if tc.wantErr && (err == nil || !strings.Contains(err.Error(), tc.wantTool) || !strings.Contains(err.Error(), "exit status 3")) {
			t.Errorf("%s: Apply error %v does not name the tool and its exit status", tc.name, err)
		}
		if got := ranWith(dir, tc.wantTool); got != "config apply -c /etc/aziot/config.toml" {
			t.Errorf("%s: %s ran with %q", tc.name, tc.wantTool, got)
		}
		if want := tc.wantTool + " applied\n" + tc.wantTool + " warned\n"; out.String() != want {
			t.Errorf("%s: output %q, want %q", tc.name, out.String(), want)
		}
		for name := range tc.tools {
			if name != tc.wantTool && ranWith(dir, name) != "" {
				t.Errorf("%s: %s ran too", tc.name, name)
			}
		}
	}
}

func TestApplyNoTool(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	if tool, err := Apply(t.Context(), DefaultPath, nil); !errors.Is(err, ErrNoApplyTool) || tool != "" {
		t.Errorf("Apply without tools = %q, %v; want ErrNoApplyTool", tool, err)
	}
}

func TestApplyCanceled(t *testing.T) {
	dir := t.TempDir()
	fakeTool(t, dir, "iotedge", 0)
	t.Setenv("PATH", dir)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := Apply(ctx, DefaultPath, nil); !errors.Is(err, context.Canceled) {
		t.Errorf("Apply(canceled) = %v, want context.Canceled", err)
	}
	if got := ranWith(dir, "iotedge"); got != "" {
		t.Errorf("iotedge ran with %q after the context ended", got)
	}
}

// The tool runs without the hierarchy passwords the provisioner may have
// been given in its environment, with the rest of it.
func TestApplyChildEnvironment(t *testing.T) {
	dir := t.TempDir()
	script := "#!/bin/sh\nenv\n"
	if err := os.WriteFile(filepath.Join(dir, "iotedge"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", dir+string(os.PathListSeparator)+os.Getenv("PATH"))
	t.Setenv("EDGE_TPM_ENDORSEMENT_AUTH", "endorsement-secret")
	t.Setenv("EDGE_TPM_OWNER_AUTH", "owner-secret")
	t.Setenv("EDGE_TPM_LOCKOUT_AUTH", "lockout-secret")
	t.Setenv("EDGE_KEEP_ME", "kept")
	var out bytes.Buffer
	if _, err := Apply(t.Context(), "/etc/aziot/config.toml", &out); err != nil {
		t.Fatal(err)
	}
	env := out.String()
	for _, secret := range []string{"endorsement-secret", "owner-secret", "lockout-secret", "EDGE_TPM_OWNER_AUTH"} {
		if strings.Contains(env, secret) {
			t.Errorf("iotedge's environment holds %q:\n%s", secret, env)
		}
	}
	if !strings.Contains(env, "EDGE_KEEP_ME=kept\n") || !strings.Contains(env, "PATH="+dir) {
		t.Errorf("iotedge's environment lost the rest:\n%s", env)
	}
}
