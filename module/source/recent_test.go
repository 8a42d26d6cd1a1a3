package source

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// add stages and then marks queued messages with IDs ids and digests
// sums, giving each the $.mid midFor(its packet ID).
func (r *recent) add(ids []uint16, sums []digest) error {
	mids := make([]string, len(ids))
	for i, id := range ids {
		mids[i] = midFor(id)
	}
	seqs, err := r.stage(ids, sums, mids)
	if err != nil {
		return err
	}
	return r.queued(seqs)
}

func midFor(id uint16) string { return fmt.Sprintf("%032x", id) }

// has reports whether the message is known to be queued, under its $.mid.
func (r *recent) has(id uint16, sum digest) bool {
	mid, queued, ok := r.lookup(id, sum)
	return ok && queued && mid == midFor(id)
}

func TestRecent(t *testing.T) {
	path := filepath.Join(t.TempDir(), "plc.recent")
	r, err := openRecent(path, "edge-relay-plc-1@h:1883")
	if err != nil {
		t.Fatal(err)
	}
	a, b := digestOf("t/1", []byte("a")), digestOf("t/1", []byte("b"))
	if err := r.add([]uint16{7, 8}, []digest{a, b}); err != nil {
		t.Fatal(err)
	}
	if !r.has(7, a) || !r.has(8, b) {
		t.Fatal("entries just added are missing")
	}
	if r.has(7, b) || r.has(9, a) {
		t.Fatal("an entry matched another ID or digest")
	}
	r.close(false)

	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("state file: %v, mode %v, want 0600", err, fi.Mode().Perm())
	}
	r, err = openRecent(path, "edge-relay-plc-1@h:1883")
	if err != nil {
		t.Fatal(err)
	}
	if !r.has(7, a) || !r.has(8, b) {
		t.Fatal("entries lost across a reopen")
	}
	// Packet ID 7 used again: the newest entry wins.
	c := digestOf("t/1", []byte("c"))
	r.add([]uint16{7}, []digest{c})
	if r.has(7, a) || !r.has(7, c) {
		t.Fatal("a reused packet ID still matches its old message")
	}
	// The ring wraps: recentSize entries later the first ones are gone.
	ids := make([]uint16, recentSize)
	sums := make([]digest, recentSize)
	for i := range ids {
		ids[i] = uint16(1000 + i)
		sums[i] = digestOf("w", []byte{byte(i), byte(i >> 8)})
	}
	if err := r.add(ids[:100], sums[:100]); err != nil {
		t.Fatal(err)
	}
	if err := r.add(ids[100:], sums[100:]); err != nil {
		t.Fatal(err)
	}
	if r.has(8, b) || r.has(7, c) {
		t.Fatal("entries older than the ring still match")
	}
	r.close(false)
	r, err = openRecent(path, "edge-relay-plc-1@h:1883")
	if err != nil {
		t.Fatal(err)
	}
	for i := range ids {
		if !r.has(ids[i], sums[i]) {
			t.Fatalf("entry %d of the wrapped ring lost across a reopen", i)
		}
	}
	if r.has(8, b) {
		t.Fatal("an overwritten entry came back")
	}
	r.close(false)

	// Staged and never marked queued (a crash between), an entry gives
	// its $.mid back, not queued.
	r, _ = openRecent(path, "edge-relay-plc-1@h:1883")
	d := digestOf("t/2", []byte("d"))
	if _, err := r.stage([]uint16{9}, []digest{d}, []string{midFor(9)}); err != nil {
		t.Fatal(err)
	}
	r.close(false)
	r, _ = openRecent(path, "edge-relay-plc-1@h:1883")
	if mid, queued, ok := r.lookup(9, d); !ok || queued || mid != midFor(9) {
		t.Fatalf("staged entry after a reopen: %q %v %v, want its $.mid, not queued", mid, queued, ok)
	}
	// A message ID of another form is not recorded.
	if seqs, _ := r.stage([]uint16{10}, []digest{d}, []string{"short"}); seqs[0] != 0 {
		t.Fatal("a message ID of another form was recorded")
	}
	r.close(false)

	// Another session (client ID or broker) starts afresh.
	r, err = openRecent(path, "edge-relay-plc-1@other:1883")
	if err != nil {
		t.Fatal(err)
	}
	if r.has(ids[0], sums[0]) {
		t.Fatal("entries of another session matched")
	}
	r.add([]uint16{5}, []digest{a})
	// A connection without a session forgets everything.
	if err := r.forget(); err != nil {
		t.Fatal(err)
	}
	if r.has(5, a) {
		t.Fatal("an entry survived forget")
	}
	r.close(false)
	r, _ = openRecent(path, "edge-relay-plc-1@other:1883")
	if r.has(5, a) {
		t.Fatal("an entry survived forget in the file")
	}
	// A removed source's file goes with it.
	if err := r.close(true); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Fatalf("state file still there after its session ended: %v", err)
	}
}

// Whatever the state file holds, opening it neither fails nor panics, and
// what is added afterwards is found.
func FuzzOpenRecent(f *testing.F) {
	dir := f.TempDir()
	seed := filepath.Join(dir, "seed")
	r, _ := openRecent(seed, "s")
	r.add([]uint16{1, 2, 3}, []digest{{1}, {2}, {3}})
	r.close(false)
	good, _ := os.ReadFile(seed)
	f.Add(good)
	f.Add(good[:len(good)-5])
	f.Add([]byte(recentMagic))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		path := filepath.Join(t.TempDir(), "x.recent")
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		r, err := openRecent(path, "s")
		if err != nil {
			t.Fatal(err)
		}
		defer r.close(false)
		d := digestOf("t", data)
		if err := r.add([]uint16{42}, []digest{d}); err != nil {
			t.Fatal(err)
		}
		if !r.has(42, d) {
			t.Fatal("an entry just added is missing")
		}
	})
}
