package childenv

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestFilter(t *testing.T) {
	in := []string{"PATH=/usr/bin", "EDGE_TPM_OWNER_AUTH=o", "EDGE_TPM_ENDORSEMENT_AUTH=e", "EDGE_TPM_LOCKOUT_AUTH=l",
		"EDGE_TPM=device:/dev/tpmrm0", "EDGE_TPM_AUTH_KEY_INDEX=0x100", "EDGE_TPM_OWNER_AUTHX=kept", "X=EDGE_TPM_OWNER_AUTH=y",
		"EDGE_HUB_DEVICE_KEY=k", "EDGE_HUB_CONNECTION_STRING=HostName=h;DeviceId=d;SharedAccessKey=k"}
	want := []string{"PATH=/usr/bin", "EDGE_TPM=device:/dev/tpmrm0", "EDGE_TPM_AUTH_KEY_INDEX=0x100", "EDGE_TPM_OWNER_AUTHX=kept", "X=EDGE_TPM_OWNER_AUTH=y"}
	if got := Filter(in); !slices.Equal(got, want) {
		t.Errorf("Filter(%q) = %q, want %q", in, got, want)
	}
}

// A child started with Environ prints no password.
func TestEnvironInChild(t *testing.T) {
	t.Setenv("EDGE_TPM_OWNER_AUTH", "owner-secret")
	t.Setenv("EDGE_TPM_ENDORSEMENT_AUTH", "endorsement-secret")
	t.Setenv(EnvDeviceKey, "key-secret")
	t.Setenv(EnvConnectionString, "HostName=h.azure-devices.net;DeviceId=d;SharedAccessKey=cs-secret")
	cmd := exec.Command("env")
	cmd.Env = Environ()
	out, err := cmd.Output()
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(out), "-secret") || !strings.Contains(string(out), "PATH=") {
		t.Errorf("the child's environment is\n%s", out)
	}
}

// Every program the provisioner starts gets Environ: each file of
// provisioner/ that starts one sets cmd.Env from it.
func TestEveryExecUsesEnviron(t *testing.T) {
	files, err := filepath.Glob("../*.go")
	if err != nil {
		t.Fatal(err)
	}
	more, _ := filepath.Glob("../*/*.go")
	files = append(files, more...)
	var checked int
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		src := string(b)
		starts := strings.Count(src, "exec.Command(") + strings.Count(src, "exec.CommandContext(")
		if starts == 0 {
			continue
		}
		checked++
		if n := strings.Count(src, "cmd.Env = childenv.Environ()"); n < starts {
			t.Errorf("%s starts %d programs but sets childenv.Environ() %d times", f, starts, n)
		}
	}
	if checked < 2 {
		t.Errorf("found %d files that start programs, want at least 2 (edgeconfig/apply.go, provision.go)", checked)
	}
}
