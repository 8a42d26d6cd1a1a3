package edgeconfig

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

var now = time.Date(2026, 11, 23, 10, 0, 0, 0, time.FixedZone("CET", 3600))

// backupName is the backup Write makes at now, named in UTC.
const backupName = "config.toml.bak-20261123T090000Z"

// wantFile checks a file's content, mode and, as root, owner.
func wantFile(t *testing.T, path string, content []byte) {
	t.Helper()
	got, err := os.ReadFile(path)
	if err != nil || !bytes.Equal(got, content) {
		t.Errorf("ReadFile(%s) = %q, %v; want %q", path, got, err, content)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("mode of %s = %v, want 0600", path, fi.Mode().Perm())
	}
	if st := fi.Sys().(*syscall.Stat_t); os.Geteuid() == 0 && (st.Uid != 0 || st.Gid != 0) {
		t.Errorf("owner of %s = %d:%d, want 0:0", path, st.Uid, st.Gid)
	}
}

func entries(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names
}

func TestWrite(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "config.toml")
	first, second := []byte("hostname = \"a\"\n"), []byte("hostname = \"b\"\n")

	backup, changed, err := Write(path, first, now)
	if err != nil || !changed || backup != "" {
		t.Fatalf("Write(new file) = %q, %v, %v; want no backup, changed", backup, changed, err)
	}
	wantFile(t, path, first)

	backup, changed, err = Write(path, first, now)
	if err != nil || changed || backup != "" {
		t.Errorf("Write(same content) = %q, %v, %v; want nothing done", backup, changed, err)
	}
	if got := entries(t, dir); len(got) != 1 {
		t.Errorf("folder holds %q after an unchanged Write, want only config.toml", got)
	}

	backup, changed, err = Write(path, second, now)
	if err != nil || !changed || backup != filepath.Join(dir, backupName) {
		t.Fatalf("Write(new content) = %q, %v, %v; want backup %s, changed", backup, changed, err, backupName)
	}
	wantFile(t, path, second)
	wantFile(t, backup, first)
}

func TestWriteFailureKeepsOriginal(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "config.toml")
	original, earlier := []byte("hostname = \"a\"\n"), []byte("an earlier backup")
	if err := os.WriteFile(path, original, 0o600); err != nil {
		t.Fatal(err)
	}
	// A backup of the same second is kept; the new one gets a suffix.
	if err := os.WriteFile(filepath.Join(dir, backupName), earlier, 0o600); err != nil {
		t.Fatal(err)
	}
	backup, _, err := Write(path, []byte("second = 2\n"), now)
	if err != nil || backup != filepath.Join(dir, backupName+"-2") {
		t.Fatalf("Write with its backup name taken = %q, %v; want the -2 backup", backup, err)
	}
	wantFile(t, backup, original)
	wantFile(t, filepath.Join(dir, backupName), earlier)
	original = []byte("second = 2\n")

	// Permissions do not stop root, who runs these tests; an immutable
	// folder does.
	if out, err := exec.Command("chattr", "+i", dir).CombinedOutput(); err != nil {
		t.Skipf("chattr +i: %v %s (needs root on ext4)", err, out)
	}
	_, _, err = Write(path, []byte("new"), now.Add(time.Hour))
	if out, cerr := exec.Command("chattr", "-i", dir).CombinedOutput(); cerr != nil {
		t.Fatalf("chattr -i: %v %s", cerr, out)
	}
	if err == nil {
		t.Error("Write into an immutable folder succeeded")
	}
	wantFile(t, path, original)
	if got := entries(t, dir); len(got) != 3 {
		t.Errorf("folder holds %q after a failed Write, want the file and the two backups only", got)
	}

	for _, bad := range []string{filepath.Join(dir, "missing", "config.toml"), filepath.Join(path, "config.toml")} {
		if _, _, err := Write(bad, []byte("new"), now); err == nil {
			t.Errorf("Write(%s) succeeded", bad)
		}
	}
	wantFile(t, path, original)
}

func TestDiffRedactsPasswords(t *testing.T) {
	old := []byte("[tpm.hierarchy_authorization]\nendorsement = \"old-e\"\nowner = 'old-o'\n")
	new := []byte("[tpm]\nhierarchy_authorization = { endorsement = \"pw-n\\\"e\", owner = \"pw-new-o\" }\n")
	d := Diff("c.toml", old, new)
	for _, secret := range []string{"old-e", "old-o", "pw-n", "pw-new-o"} {
		if strings.Contains(d, secret) {
			t.Errorf("Diff shows the password %q:\n%s", secret, d)
		}
	}
	if strings.Count(d, `"<redacted `) != 4 {
		t.Errorf("Diff does not show the four passwords redacted:\n%s", d)
	}
}

func TestDiff(t *testing.T) {
	old := []byte("hostname = \"a\"\n\n[provisioning]\nsource = \"manual\"\n")
	new := []byte("hostname = \"a\"\n\n[provisioning]\nsource = \"dps\"\n")
	d := Diff("/etc/aziot/config.toml", old, new)
	for _, want := range []string{"--- /etc/aziot/config.toml (current)\n", "+++ /etc/aziot/config.toml (proposed)\n", "-source = \"manual\"\n", "+source = \"dps\"\n", " [provisioning]\n"} {
		if !strings.Contains(d, want) {
			t.Errorf("Diff = %q, want it to hold %q", d, want)
		}
	}
	if d := Diff("p", old, old); d != "" {
		t.Errorf("Diff(equal) = %q, want \"\"", d)
	}
}

// A second run with the same settings changes nothing and leaves no backup.
func TestSecondRunUnchanged(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "config.toml")
	if err := os.WriteFile(path, readIn(t, "template"), 0o644); err != nil {
		t.Fatal(err)
	}
	var backups []string
	for run, at := range []time.Time{now, now.Add(time.Hour)} {
		doc, err := Load(path)
		if err != nil {
			t.Fatal(err)
		}
		if err := doc.SetDPS(testDPS(), false); err != nil {
			t.Fatal(err)
		}
		backup, changed, err := Write(path, doc.Bytes(), at)
		if err != nil || changed != (run == 0) || (backup != "") != (run == 0) {
			t.Errorf("run %d: Write = %q, %v, %v; want a change and a backup on the first run only", run+1, backup, changed, err)
		}
		if backup != "" {
			backups = append(backups, backup)
		}
	}
	wantFile(t, path, mustRead(t, filepath.Join("testdata", "out", "template.toml")))
	if got := entries(t, dir); len(got) != 2 || len(backups) != 1 || filepath.Join(dir, got[1]) != backups[0] {
		t.Errorf("folder holds %q, want config.toml and the one backup %q", got, backups)
	}
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
