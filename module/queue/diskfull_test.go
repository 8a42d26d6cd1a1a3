package queue

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"syscall"
	"testing"
)

// tmpfs mounts a 4 MiB tmpfs for the test, or skips it where that is not
// possible (not root, no mount).
func tmpfs(t *testing.T) string {
	if os.Geteuid() != 0 {
		t.Skip("mounting a tmpfs needs root")
	}
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", dir).CombinedOutput(); err != nil {
		t.Skipf("mount tmpfs: %v: %s", err, out)
	}
	t.Cleanup(func() {
		if err := syscall.Unmount(dir, 0); err != nil {
			t.Errorf("unmount %s: %v", dir, err)
		}
	})
	return dir
}

// fill appends 4 KiB messages until the disk is full and returns their
// count; the Append that fails must say ENOSPC.
func fill(t *testing.T, q *Queue, from int) int {
	t.Helper()
	for i := from; ; i++ {
		err := q.Append(t.Context(), bigMsg(i))
		if err == nil {
			continue
		}
		if !errors.Is(err, syscall.ENOSPC) {
			t.Fatalf("Append on a full disk = %v, want ENOSPC", err)
		}
		// Still full: the same error, nothing else broken.
		if err := q.Append(t.Context(), bigMsg(i)); !errors.Is(err, syscall.ENOSPC) {
			t.Fatalf("second Append on a full disk = %v, want ENOSPC", err)
		}
		return i - from
	}
}

func bigMsg(i int) *Message {
	m := msg(i)
	m.Body = make([]byte, 4<<10)
	return m
}

func TestDiskFull(t *testing.T) {
	// "ack, one segment": the active segment is larger than the disk, so
	// acknowledging its records frees nothing until it is emptied.
	for _, free := range []string{"ack", "remove filler", "ack, one segment"} {
		t.Run(free, func(t *testing.T) {
			mnt := tmpfs(t)
			filler := filepath.Join(mnt, "filler")
			if err := os.WriteFile(filler, make([]byte, 1<<20), 0o600); err != nil {
				t.Fatal(err)
			}
			opts := testOptions(t, filepath.Join(mnt, "queue"))
			opts.SegmentSize = 256 << 10
			if free == "ack, one segment" {
				opts.SegmentSize = 16 << 20
			}
			q := mustOpen(t, opts)
			n := fill(t, q, 1)
			if n < 100 {
				t.Fatalf("only %d messages fit", n)
			}
			if err := q.Close(); err != nil {
				t.Fatal(err)
			}

			// Nothing half-written survives.
			q = mustOpen(t, opts)
			if st := q.Stats(); st.Corrupt != 0 || st.Depth != int64(n) {
				t.Errorf("after reopen Stats = %+v, want Depth %d, no Corrupt", st, n)
			}
			got := readAll(t, q, 0)
			if s := seqs(got); !reflect.DeepEqual(s, span(1, uint64(n))) {
				t.Fatalf("after reopen Read %d messages, want 1..%d", len(s), n)
			}

			switch free {
			case "ack", "ack, one segment":
				if err := q.Ack(span(1, uint64(n))...); err != nil {
					t.Fatal(err)
				}
			case "remove filler":
				if err := os.Remove(filler); err != nil {
					t.Fatal(err)
				}
			}
			m := msg(n + 1)
			if err := q.Append(t.Context(), m); err != nil {
				t.Fatalf("Append once space is back = %v", err)
			}
			if m.Seq != uint64(n+1) {
				t.Errorf("Append once space is back gave Seq %d, want %d", m.Seq, n+1)
			}
			// And it fills up again as cleanly, with the space freed.
			more := fill(t, q, n+2)
			if more < 100 {
				t.Errorf("only %d messages fit once space was freed", more)
			}
			if err := q.Close(); err != nil {
				t.Fatal(err)
			}
			q = mustOpen(t, opts)
			if st := q.Stats(); st.Corrupt != 0 {
				t.Errorf("Corrupt = %d after filling twice", st.Corrupt)
			}
			t.Logf("%d messages filled the disk; %d more after freeing space", n, more)
		})
	}
}
