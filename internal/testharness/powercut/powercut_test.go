package powercut

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func write(t *testing.T, path string, data []byte, syncFile bool) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Write(data); err != nil {
		t.Fatal(err)
	}
	if syncFile {
		if err := f.Sync(); err != nil {
			t.Fatal(err)
		}
	}
}

func syncDir(t *testing.T, dir string) {
	t.Helper()
	d, err := os.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		t.Fatal(err)
	}
}

// Only fsync makes data and names durable; a cut keeps a prefix of what
// was appended since.
func TestCut(t *testing.T) {
	mnt := t.TempDir()
	f := New(1)
	m := f.Mount(t, mnt)
	sub := filepath.Join(mnt, "sub")
	if err := os.Mkdir(sub, 0o700); err != nil {
		t.Fatal(err)
	}
	write(t, filepath.Join(mnt, "synced"), []byte("durable"), true)
	write(t, filepath.Join(mnt, "synced"), bytes.Repeat([]byte("x"), 3000), false)
	write(t, filepath.Join(mnt, "data-only"), []byte("lost with its name"), true)
	syncDir(t, mnt) // synced, data-only and sub are durable names
	write(t, filepath.Join(mnt, "name-only"), []byte("lost"), false)
	write(t, filepath.Join(sub, "in-unsynced-sub"), []byte("lost"), true)
	if err := os.Rename(filepath.Join(mnt, "data-only"), filepath.Join(mnt, "renamed")); err != nil {
		t.Fatal(err)
	}
	f.Cut()
	if _, err := os.ReadFile(filepath.Join(mnt, "synced")); err == nil {
		t.Errorf("read after the cut worked; want an error while the power is off")
	}
	if err := m.Unmount(); err != nil {
		t.Fatal(err)
	}
	f.Mount(t, mnt)
	got, err := os.ReadFile(filepath.Join(mnt, "synced"))
	if err != nil || !bytes.HasPrefix(got, []byte("durable")) || len(bytes.Trim(got[7:], "x")) > 0 {
		t.Errorf("synced = %q, %v; want durable and a prefix of the unsynced append", got, err)
	}
	if got, err := os.ReadFile(filepath.Join(mnt, "data-only")); err != nil || string(got) != "lost with its name" {
		t.Errorf("data-only = %q, %v; want its data under its durable name", got, err)
	}
	for _, name := range []string{"name-only", "renamed", "sub/in-unsynced-sub"} {
		if _, err := os.Stat(filepath.Join(mnt, name)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("Stat(%s) after the cut = %v, want it gone", name, err)
		}
	}
	if f.Cuts() != 1 {
		t.Errorf("Cuts = %d, want 1", f.Cuts())
	}
}

// Over many cuts, an append that was not synced leaves a random prefix.
func TestTornPrefix(t *testing.T) {
	f := New(7)
	lens := map[int]bool{}
	for range 50 {
		lens[len(f.tear(bytes.Repeat([]byte("a"), 2000), []byte("aaaa")))] = true
	}
	if len(lens) < 10 {
		t.Errorf("50 tears kept %d distinct lengths, want a spread", len(lens))
	}
	for n := range lens {
		if n < 4 || n > 2000 {
			t.Errorf("tear kept %d bytes, want 4 to 2000", n)
		}
	}
}
