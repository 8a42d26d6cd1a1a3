package queue

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// writeQueue appends msg(1..n) one Append each into a fresh folder and
// returns the folder and the bytes of its only segment.
func writeQueue(t *testing.T, n int) (string, []byte) {
	t.Helper()
	dir := t.TempDir()
	q := mustOpen(t, testOptions(t, dir))
	for i := 1; i <= n; i++ {
		appendAll(t, q, msg(i))
	}
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(filepath.Join(dir, segmentName(1)))
	if err != nil {
		t.Fatal(err)
	}
	if want := segHeader + int64(n)*recSize; int64(len(data)) != want {
		t.Fatalf("segment holds %d bytes, want %d", len(data), want)
	}
	return dir, data
}

// crashed is a queue folder whose segment holds data, as a crash left it.
func crashed(t *testing.T, data []byte) string {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, segmentName(1)), data, 0o600); err != nil {
		t.Fatal(err)
	}
	return dir
}

// checkRecovered opens dir and checks that msg(1..kept) come back, that
// corrupt records were counted and that Appends go on after them.
func checkRecovered(t *testing.T, dir string, kept int, corrupt func(int64) bool, what string) {
	t.Helper()
	var want []*Message
	for i := 1; i <= kept; i++ {
		want = append(want, msg(i))
	}
	checkRecoveredAs(t, dir, want, corrupt, what)
}

func checkRecoveredAs(t *testing.T, dir string, want []*Message, corrupt func(int64) bool, what string) {
	t.Helper()
	q, err := Open(testOptions(t, dir))
	if err != nil {
		t.Fatalf("%s: Open: %v", what, err)
	}
	defer q.Close()
	if st := q.Stats(); !corrupt(st.Corrupt) {
		t.Errorf("%s: Corrupt = %d", what, st.Corrupt)
	}
	kept := len(want)
	got := readAll(t, q, 0)
	if s := seqs(got); !reflect.DeepEqual(s, span(1, uint64(kept))) {
		t.Errorf("%s: Read = %v, want 1..%d", what, s, kept)
	}
	for i, m := range got {
		if i < kept && !sameMessage(m, withSeq(want[i], uint64(i+1))) {
			t.Errorf("%s: message %d = %+v", what, i+1, m)
		}
	}
	m := msg(100)
	if err := q.Append(t.Context(), m); err != nil || m.Seq != uint64(kept+1) {
		t.Errorf("%s: Append after recovery = Seq %d, %v; want Seq %d", what, m.Seq, err, kept+1)
	}
}

func withSeq(m *Message, seq uint64) *Message { m.Seq = seq; return m }

func exactly(n int64) func(int64) bool { return func(c int64) bool { return c == n } }

// A crash can stop a write at any byte: every cut of the last two records
// loses exactly the record it tears.
func TestRecoverTornTail(t *testing.T) {
	const n = 4
	_, data := writeQueue(t, n)
	for cut := segHeader + (n-2)*recSize; cut < int64(len(data)); cut++ {
		whole := int((cut - segHeader) / recSize)
		want := int64(1)
		if (cut-segHeader)%recSize == 0 {
			want = 0
		}
		dir := crashed(t, data[:cut])
		checkRecovered(t, dir, whole, exactly(want), fmt.Sprintf("cut at %d", cut))
		// Recovery left the folder clean.
		var after []*Message
		for i := 1; i <= whole; i++ {
			after = append(after, msg(i))
		}
		after = append(after, msg(100))
		checkRecoveredAs(t, dir, after, exactly(0), fmt.Sprintf("reopen after cut at %d", cut))
		if t.Failed() {
			return
		}
	}
	// A cut inside the header of an empty segment.
	checkRecovered(t, crashed(t, data[:3]), 0, exactly(0), "cut in segment header")
}

// threeSegments writes messages 1-9 to a queue in a temporary folder, in
// segments of three records (1-3, 4-6, 7-9), closes it, and returns the
// folder and the options to open it again.
func threeSegments(t *testing.T) (string, Options) {
	t.Helper()
	dir := t.TempDir()
	opts := testOptions(t, dir)
	opts.SegmentSize = segHeader + 3*recSize
	q := mustOpen(t, opts)
	for i := 1; i <= 9; i++ {
		appendAll(t, q, msg(i))
	}
	q.Close()
	return dir, opts
}

// Damage in a segment before the last loses the damaged record only;
// its seq is a gap that acks pass over.
func TestRecoverMiddleSegment(t *testing.T) {
	dir, opts := threeSegments(t)
	path := filepath.Join(dir, segmentName(4))
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	data[segHeader+recSize+20] ^= 1 // in the body of seq 5
	os.WriteFile(path, data, 0o600)

	q := mustOpen(t, opts)
	if st := q.Stats(); st.Corrupt != 1 || st.Depth != 8 {
		t.Errorf("Stats = %+v, want Corrupt 1 (seq 5), Depth 8", st)
	}
	if s := seqs(readAll(t, q, 0)); !reflect.DeepEqual(s, []uint64{1, 2, 3, 4, 6, 7, 8, 9}) {
		t.Errorf("Read = %v, want [1 2 3 4 6 7 8 9]", s)
	}
	m := msg(10)
	appendAll(t, q, m)
	if m.Seq != 10 {
		t.Errorf("Append after recovery gave Seq %d, want 10", m.Seq)
	}
	if err := q.Ack(1, 2, 3, 4, 6, 7, 8, 9, 10); err != nil {
		t.Fatal(err)
	}
	if st := q.Stats(); st.Depth != 0 || st.Bytes != 0 {
		t.Errorf("Stats after acking all = %+v, want empty", st)
	}
}

const killChildEnv = "QUEUE_TEST_KILL_CHILD"

// killChild is the process TestKill kills: producers append and report
// each message once Append returned, a consumer reads and acks in order
// and reports each ack before making it.
func killChild() {
	q, err := Open(Options{Dir: os.Getenv(killChildEnv), SegmentSize: 8 << 10})
	if err != nil {
		fmt.Println("E", err)
		os.Exit(1)
	}
	ctx := context.Background()
	for p := range 4 {
		go func() {
			for i := 0; ; i++ {
				m := &Message{ID: fmt.Sprintf("%d-%d-%d", os.Getpid(), p, i), Body: make([]byte, 200)}
				if err := q.Append(ctx, m); err != nil {
					fmt.Println("E", err)
					os.Exit(1)
				}
				fmt.Printf("A %d %s\n", m.Seq, m.ID)
			}
		}()
	}
	var after uint64
	for {
		msgs, err := q.Read(ctx, after, 20)
		if err != nil {
			fmt.Println("E", err)
			os.Exit(1)
		}
		var acked []uint64
		for _, m := range msgs {
			acked = append(acked, m.Seq)
		}
		// Consumers fall behind, so that the kill finds a backlog.
		time.Sleep(time.Millisecond)
		// Announced before, so that the parent knows every seq that may
		// be acked when the kill comes.
		for _, s := range acked {
			fmt.Printf("K %d\n", s)
		}
		if err := q.Ack(acked...); err != nil {
			fmt.Println("E", err)
			os.Exit(1)
		}
		after = msgs[len(msgs)-1].Seq
	}
}

// TestKill kills a process that appends and acks with SIGKILL, three times
// over, and checks that no acknowledged Append is lost and seqs go on.
func TestKill(t *testing.T) {
	if testing.Short() {
		t.Skip("starts processes")
	}
	dir := t.TempDir()
	appended := map[uint64]string{}
	acked := map[uint64]bool{}
	var maxSeq uint64
	for round := range 3 {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), killChildEnv+"="+dir)
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		timer := time.AfterFunc(10*time.Second, func() { cmd.Process.Kill() })
		sc := bufio.NewScanner(out)
		n := 0
		for sc.Scan() {
			f := strings.Fields(sc.Text())
			var seq uint64
			switch {
			case len(f) == 3 && f[0] == "A":
				fmt.Sscan(f[1], &seq)
				if seq <= maxSeq && appended[seq] == "" {
					t.Errorf("round %d: seq %d appended after seq %d was seen", round, seq, maxSeq)
				}
				appended[seq] = f[2]
				if n++; n == 1500 {
					cmd.Process.Kill()
				}
			case len(f) == 2 && f[0] == "K":
				fmt.Sscan(f[1], &seq)
				acked[seq] = true
			default:
				t.Errorf("round %d: child says %q", round, sc.Text())
			}
		}
		timer.Stop()
		cmd.Wait()
		if n < 1500 {
			t.Fatalf("round %d: child appended only %d messages", round, n)
		}
		for s := range appended {
			maxSeq = max(maxSeq, s)
		}

		q := mustOpen(t, testOptions(t, dir))
		got := map[uint64]string{}
		for _, m := range readAll(t, q, 0) {
			got[m.Seq] = m.ID
		}
		lost := 0
		for s, id := range appended {
			if !acked[s] && got[s] != id {
				lost++
			}
		}
		for s, id := range got {
			if appended[s] != "" && appended[s] != id {
				t.Errorf("round %d: seq %d holds %s, was appended as %s", round, s, id, appended[s])
			}
		}
		if lost > 0 {
			t.Errorf("round %d: %d acknowledged, unacked messages lost", round, lost)
		}
		m := msg(1)
		appendAll(t, q, m)
		if m.Seq <= maxSeq {
			t.Errorf("round %d: Seq after the kill = %d, want above %d", round, m.Seq, maxSeq)
		}
		maxSeq = m.Seq
		appended[m.Seq] = m.ID
		t.Logf("round %d: %d appended, %d acked, %d pending after the kill, %d corrupt records cut",
			round, len(appended), len(acked), len(got), q.Stats().Corrupt)
		q.Close()
	}
}
