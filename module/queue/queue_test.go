package queue

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"go.uber.org/goleak"

	"github.com/edgetpm/edgetpm/internal/testharness/testclock"
)

func TestMain(m *testing.M) {
	if os.Getenv(killChildEnv) != "" {
		killChild()
		return
	}
	goleak.VerifyTestMain(m)
}

var t0 = time.Date(2026, 11, 23, 10, 0, 0, 123456789, time.UTC)

func testOptions(t testing.TB, dir string) Options {
	return Options{Dir: dir, Log: zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel)}
}

func mustOpen(t testing.TB, opts Options) *Queue {
	t.Helper()
	q, err := Open(opts)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { q.Close() })
	return q
}

// msg is a message with every field set, the same size for every i < 10000.
func msg(i int) *Message {
	return &Message{
		ID:          fmt.Sprintf("id-%04d", i),
		Source:      "mqtt:press",
		Enqueued:    t0,
		Output:      "telemetry",
		ContentType: "application/json",
		Properties:  map[string]string{"line": "3"},
		Body:        fmt.Appendf(nil, `{"n":%04d}`, i),
	}
}

func appendAll(t testing.TB, q *Queue, msgs ...*Message) {
	t.Helper()
	for _, m := range msgs {
		if err := q.Append(t.Context(), m); err != nil {
			t.Fatalf("Append(%s): %v", m.ID, err)
		}
	}
}

// readAll reads everything pending after after. A cancelled context
// makes Read return what there is, or context.Canceled at once.
func readAll(t testing.TB, q *Queue, after uint64) []*Message {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	var all []*Message
	for {
		got, err := q.Read(ctx, after, 7)
		if errors.Is(err, context.Canceled) {
			return all
		}
		if err != nil {
			t.Fatalf("Read(%d): %v", after, err)
		}
		all = append(all, got...)
		after = got[len(got)-1].Seq
	}
}

func seqs(msgs []*Message) []uint64 {
	var s []uint64
	for _, m := range msgs {
		s = append(s, m.Seq)
	}
	return s
}

func span(from, to uint64) []uint64 {
	var s []uint64
	for i := from; i <= to; i++ {
		s = append(s, i)
	}
	return s
}

// sameMessage compares every field; times by instant, as the location is
// not stored.
func sameMessage(a, b *Message) bool {
	if !a.Enqueued.Equal(b.Enqueued) || !a.Expires.Equal(b.Expires) {
		return false
	}
	x, y := *a, *b
	x.Enqueued, x.Expires, y.Enqueued, y.Expires = time.Time{}, time.Time{}, time.Time{}, time.Time{}
	return reflect.DeepEqual(x, y)
}

var roundTripTests = []*Message{
	msg(1),
	{ID: "empty"},
	{ID: "empty-not-nil", Properties: map[string]string{}, Body: []byte{}},
	{ID: "times", Enqueued: time.Unix(-5, 7), Expires: time.Date(9999, 12, 31, 23, 59, 59, 999999999, time.UTC)},
	{ID: "unicode ünï €", Source: "edgehub:input1", Output: "out", ContentType: "text/plain; charset=utf-8",
		ContentEncoding: "utf-8", Properties: map[string]string{"b": "", "a": "1", "$.ct": "x", "é": "\x00"},
		Body: []byte("\x00\xff binary")},
	{ID: "big", Body: make([]byte, 300<<10), Enqueued: t0, Expires: t0.Add(time.Hour)},
}

func TestRoundTrip(t *testing.T) {
	dir := t.TempDir()
	opts := testOptions(t, dir)
	opts.Now = testclock.New(t0).Now
	q := mustOpen(t, opts)
	var want []*Message
	for _, m := range roundTripTests {
		c := *m
		c.Properties = cloneMap(m.Properties)
		want = append(want, &c)
	}
	if err := q.Append(t.Context(), want[:2]...); err != nil {
		t.Fatal(err)
	}
	appendAll(t, q, want[2:]...)
	for i, m := range want {
		if m.Seq != uint64(i+1) {
			t.Errorf("Append gave %s Seq %d, want %d", m.ID, m.Seq, i+1)
		}
		if m.Enqueued.IsZero() {
			t.Errorf("Append left %s Enqueued zero", m.ID)
		}
	}
	check := func(q *Queue) {
		t.Helper()
		got := readAll(t, q, 0)
		if len(got) != len(want) {
			t.Fatalf("Read returned %d messages, want %d", len(got), len(want))
		}
		for i := range got {
			if !sameMessage(got[i], want[i]) {
				t.Errorf("Read message %d = %+v\nwant %+v", i, got[i], want[i])
			}
		}
	}
	check(q)
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
	q = mustOpen(t, opts)
	check(q)
	m := msg(99)
	appendAll(t, q, m)
	if m.Seq != uint64(len(want)+1) {
		t.Errorf("after reopen Append gave Seq %d, want %d", m.Seq, len(want)+1)
	}
	if st := q.Stats(); st.Depth != int64(len(want)+1) || st.Corrupt != 0 || st.Appended != 1 {
		t.Errorf("Stats = %+v, want Depth %d, Appended 1, no Corrupt", st, len(want)+1)
	}
}

func cloneMap(m map[string]string) map[string]string {
	if m == nil {
		return nil
	}
	c := make(map[string]string, len(m))
	for k, v := range m {
		c[k] = v
	}
	return c
}

func TestReadWaitsAndSkips(t *testing.T) {
	q := mustOpen(t, testOptions(t, t.TempDir()))
	got := make(chan []*Message, 1)
	go func() {
		msgs, err := q.Read(t.Context(), 0, 10)
		if err != nil {
			t.Error(err)
		}
		got <- msgs
	}()
	time.Sleep(10 * time.Millisecond)
	appendAll(t, q, msg(1))
	if msgs := <-got; !reflect.DeepEqual(seqs(msgs), []uint64{1}) {
		t.Errorf("waiting Read = %v, want [1]", seqs(msgs))
	}
	appendAll(t, q, msg(2), msg(3), msg(4))
	if err := q.Ack(3); err != nil {
		t.Fatal(err)
	}
	if s := seqs(readAll(t, q, 0)); !reflect.DeepEqual(s, []uint64{1, 2, 4}) {
		t.Errorf("Read after Ack(3) = %v, want [1 2 4]", s)
	}
	if err := q.Ack(5); err == nil {
		t.Error("Ack(5) of a seq not appended yet succeeded")
	}
}

// A realistic fsync takes time; the writer batches what arrives meanwhile.
func TestGroupCommit(t *testing.T) {
	q, err := open(testOptions(t, t.TempDir()), func(f *os.File) error {
		time.Sleep(time.Millisecond)
		return fdatasync(f)
	})
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	const producers, each = 64, 20
	var wg sync.WaitGroup
	for p := range producers {
		wg.Go(func() {
			for i := range each {
				if err := q.Append(t.Context(), msg(p*each+i)); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	syncs := q.syncs.Load()
	if syncs > producers*each/8 {
		t.Errorf("%d appends took %d fsyncs, want at most %d", producers*each, syncs, producers*each/8)
	}
	got := readAll(t, q, 0)
	if s := seqs(got); !reflect.DeepEqual(s, span(1, producers*each)) {
		t.Errorf("Read returned seqs %v, want 1..%d", s, producers*each)
	}
	ids := map[string]bool{}
	for _, m := range got {
		ids[m.ID] = true
	}
	if len(ids) != producers*each {
		t.Errorf("Read returned %d distinct IDs, want %d", len(ids), producers*each)
	}
	t.Logf("%d appends, %d fsyncs", producers*each, syncs)
}

func TestReopenAfterAck(t *testing.T) {
	dir := t.TempDir()
	opts := testOptions(t, dir)
	opts.SegmentSize = 300 // a few messages a segment
	q := mustOpen(t, opts)
	for i := 1; i <= 10; i++ {
		appendAll(t, q, msg(i))
	}
	if err := q.Ack(1, 2, 4, 3, 7); err != nil {
		t.Fatal(err)
	}
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
	q = mustOpen(t, opts)
	// 7 was acked above the watermark, which only lives in memory.
	if s := seqs(readAll(t, q, 0)); !reflect.DeepEqual(s, []uint64{5, 6, 7, 8, 9, 10}) {
		t.Errorf("after reopen Read = %v, want [5 6 7 8 9 10]", s)
	}
	if err := q.Ack(span(5, 10)...); err != nil {
		t.Fatal(err)
	}
	if st := q.Stats(); st.Depth != 0 || st.Bytes != 0 || st.Acked != 6 {
		t.Errorf("Stats after acking all = %+v, want Depth 0, Bytes 0, Acked 6", st)
	}
	segs, _ := filepath.Glob(filepath.Join(dir, "*"+segExt))
	if len(segs) != 1 {
		t.Errorf("%d segment files left after acking all, want only the active one", len(segs))
	}
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
	q = mustOpen(t, opts)
	if got := readAll(t, q, 0); len(got) != 0 {
		t.Errorf("after acking all and reopening Read = %v, want nothing", seqs(got))
	}
	m := msg(11)
	appendAll(t, q, m)
	if m.Seq != 11 {
		t.Errorf("Seq after reopen = %d, want 11", m.Seq)
	}
}

// recSize is the size of msg(i)'s record.
var recSize = int64(len(appendRecord(nil, msg(1), 0)))

func TestBackpressure(t *testing.T) {
	opts := testOptions(t, t.TempDir())
	opts.MaxBytes = 5 * recSize
	q := mustOpen(t, opts)
	for i := 1; i <= 5; i++ {
		appendAll(t, q, msg(i))
	}
	if err := q.Append(t.Context(), msg(6)); !errors.Is(err, ErrFull) {
		t.Fatalf("Append to a full queue = %v, want ErrFull", err)
	}
	if st := q.Stats(); st.Bytes != 5*recSize || st.Depth != 5 {
		t.Errorf("Stats = %+v, want Bytes %d, Depth 5", st, 5*recSize)
	}
	// An ack above the oldest frees nothing yet: the space comes back in
	// order.
	if err := q.Ack(2); err != nil {
		t.Fatal(err)
	}
	if err := q.Append(t.Context(), msg(6)); !errors.Is(err, ErrFull) {
		t.Fatalf("Append after Ack(2) = %v, want ErrFull", err)
	}
	if err := q.Ack(1); err != nil {
		t.Fatal(err)
	}
	if err := q.Append(t.Context(), msg(6), msg(7)); err != nil {
		t.Fatalf("Append after acking two = %v", err)
	}
	if err := q.Append(t.Context(), msg(8)); !errors.Is(err, ErrFull) {
		t.Fatalf("Append to a full queue again = %v, want ErrFull", err)
	}
	if err := q.Append(t.Context(), msg(1), msg(2), msg(3), msg(4), msg(5), msg(6)); !errors.Is(err, ErrTooLarge) {
		t.Errorf("Append bigger than MaxBytes = %v, want ErrTooLarge", err)
	}
	if st := q.Stats(); len(st.Dropped) != 0 || st.Appended != 7 {
		t.Errorf("Stats = %+v, want nothing dropped, 7 appended", st)
	}
}

func TestDropOldest(t *testing.T) {
	opts := testOptions(t, t.TempDir())
	opts.MaxBytes = 5 * recSize
	opts.WhenFull = DropOldest
	opts.SegmentSize = 3 * recSize
	q := mustOpen(t, opts)
	for i := 1; i <= 8; i++ {
		appendAll(t, q, msg(i))
	}
	if err := q.Append(t.Context(), msg(9), msg(10)); err != nil {
		t.Fatal(err)
	}
	st := q.Stats()
	if st.Dropped[reasonFull] != 5 || st.Depth != 5 || st.Bytes != 5*recSize {
		t.Errorf("Stats = %+v, want 5 dropped full, Depth 5, Bytes %d", st, 5*recSize)
	}
	got := readAll(t, q, 0)
	if s := seqs(got); !reflect.DeepEqual(s, span(6, 10)) {
		t.Errorf("Read = %v, want 6..10", s)
	}
	// Pending tells a reader holding read messages which are still wanted.
	for seq, want := range map[uint64]bool{1: false, 5: false, 6: true, 10: true, 11: false} {
		if got := q.Pending(seq); got != want {
			t.Errorf("Pending(%d) = %v, want %v", seq, got, want)
		}
	}
	// An ack of a dropped message is no ack.
	if err := q.Ack(1, 6); err != nil {
		t.Fatal(err)
	}
	if st := q.Stats(); st.Acked != 1 {
		t.Errorf("Acked = %d, want 1", st.Acked)
	}
	if q.Pending(6) {
		t.Error("Pending(6) after its ack")
	}
}

func TestStale(t *testing.T) {
	c := testclock.New(t0)
	opts := testOptions(t, t.TempDir())
	opts.Now = c.Now
	opts.MaxAge = time.Hour
	opts.MaxBytes = 4 * recSize
	q := mustOpen(t, opts)
	expiring := msg(2)
	expiring.Expires = t0.Add(10 * time.Minute)
	appendAll(t, q, msg(1), expiring)
	c.Add(30 * time.Minute)
	appendAll(t, q, freshMsg(3))

	if s := seqs(readAll(t, q, 0)); !reflect.DeepEqual(s, []uint64{1, 3}) {
		t.Errorf("Read after 30 minutes = %v, want [1 3]", s)
	}
	if st := q.Stats(); st.Dropped[reasonExpired] != 1 || st.Depth != 2 || st.OldestAge != 30*time.Minute {
		t.Errorf("Stats = %+v, want 1 expired, Depth 2, OldestAge 30m", st)
	}
	c.Add(45 * time.Minute) // message 1 is 75 minutes old, 3 is 45
	if s := seqs(readAll(t, q, 0)); !reflect.DeepEqual(s, []uint64{3}) {
		t.Errorf("Read after 75 minutes = %v, want [3]", s)
	}
	if st := q.Stats(); st.Dropped[reasonAge] != 1 {
		t.Errorf("Dropped = %v, want 1 for age", st.Dropped)
	}

	// Under Backpressure, old messages make room before ErrFull.
	c.Add(time.Hour)
	appendAll(t, q, freshMsg(4), freshMsg(5), freshMsg(6), freshMsg(7))
	if st := q.Stats(); st.Dropped[reasonAge] != 2 || st.Depth != 4 {
		t.Errorf("Stats = %+v, want 2 dropped for age, Depth 4", st)
	}
	// With nobody reading, the flusher sweeps the front.
	c.Add(2 * time.Hour)
	deadline := time.Now().Add(5 * time.Second)
	for q.Stats().Depth != 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if st := q.Stats(); st.Depth != 0 || st.Dropped[reasonAge] != 6 || st.Bytes != 0 || st.Dropped[reasonExpired] != 1 {
		t.Errorf("Stats after sweeping = %+v, want Depth 0, 6 dropped for age, 1 expired", st)
	}
}

// freshMsg is msg(i) with Enqueued left for Append to set.
func freshMsg(i int) *Message {
	m := msg(i)
	m.Enqueued = time.Time{}
	return m
}

func TestClose(t *testing.T) {
	dir := t.TempDir()
	opts := testOptions(t, dir)
	q, err := Open(opts)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Open(opts); err == nil || !strings.Contains(err.Error(), "in use") {
		t.Errorf("second Open of the same folder = %v, want in use", err)
	}
	readErr := make(chan error, 1)
	go func() {
		_, err := q.Read(t.Context(), 0, 1)
		readErr <- err
	}()
	time.Sleep(10 * time.Millisecond)
	appendAll(t, q, msg(1))
	if err := <-readErr; err != nil {
		t.Errorf("Read = %v, want the message appended", err)
	}
	if err := q.Ack(1); err != nil {
		t.Fatal(err)
	}
	if err := q.Close(); err != nil {
		t.Fatalf("Close = %v", err)
	}
	go func() {
		_, err := q.Read(t.Context(), 1, 1)
		readErr <- err
	}()
	if err := <-readErr; !errors.Is(err, ErrClosed) {
		t.Errorf("Read after Close = %v, want ErrClosed", err)
	}
	for name, err := range map[string]error{
		"Append": q.Append(t.Context(), msg(2)),
		"Ack":    q.Ack(1),
		"Close":  q.Close(),
	} {
		if !errors.Is(err, ErrClosed) {
			t.Errorf("%s after Close = %v, want ErrClosed", name, err)
		}
	}
	q = mustOpen(t, opts)
	if got := readAll(t, q, 0); len(got) != 0 {
		t.Errorf("Read after reopen = %v; the ack saved at Close was lost", seqs(got))
	}

	// A Read waiting when Close comes returns ErrClosed.
	go func() {
		_, err := q.Read(t.Context(), 0, 1)
		readErr <- err
	}()
	time.Sleep(10 * time.Millisecond)
	q.Close()
	if err := <-readErr; !errors.Is(err, ErrClosed) {
		t.Errorf("Read waiting across Close = %v, want ErrClosed", err)
	}
}

func TestOpenErrors(t *testing.T) {
	file := filepath.Join(t.TempDir(), "file")
	os.WriteFile(file, nil, 0o600)
	for _, opts := range []Options{
		{},
		{Dir: t.TempDir(), MaxBytes: -1},
		{Dir: t.TempDir(), WhenFull: 7},
		{Dir: file},
	} {
		if q, err := Open(opts); err == nil {
			q.Close()
			t.Errorf("Open(%+v) succeeded", opts)
		}
	}
}

func TestAppendContext(t *testing.T) {
	q := mustOpen(t, testOptions(t, t.TempDir()))
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := q.Read(ctx, 0, 1); !errors.Is(err, context.Canceled) {
		t.Errorf("Read with a cancelled context = %v", err)
	}
	if err := q.Append(t.Context(), nil); err == nil {
		t.Error("Append(nil) succeeded")
	}
	if err := q.Append(t.Context()); err != nil {
		t.Errorf("Append() = %v", err)
	}
}

// The watermark survives a torn slot: the other one holds the one before.
func TestAckFileSlots(t *testing.T) {
	dir := t.TempDir()
	opts := testOptions(t, dir)
	q := mustOpen(t, opts)
	for i := 1; i <= 6; i++ {
		appendAll(t, q, msg(i))
	}
	save := func(seqs ...uint64) {
		t.Helper()
		if err := q.Ack(seqs...); err != nil {
			t.Fatal(err)
		}
		if err := q.saveAcks(); err != nil {
			t.Fatal(err)
		}
	}
	save(1, 2) // generation 1, slot 1
	save(3, 4) // generation 2, slot 0
	q.Close()
	path := filepath.Join(dir, ackFile)
	b, _ := os.ReadFile(path)
	b[10] ^= 1 // slot 0
	os.WriteFile(path, b, 0o600)
	q = mustOpen(t, opts)
	if s := seqs(readAll(t, q, 0)); !reflect.DeepEqual(s, span(3, 6)) {
		t.Errorf("with the newest slot torn Read = %v, want 3..6", s)
	}
	q.Close()
	b[ackSlot+3] ^= 1 // slot 1 too
	os.WriteFile(path, b, 0o600)
	q = mustOpen(t, opts)
	if s := seqs(readAll(t, q, 0)); !reflect.DeepEqual(s, span(1, 6)) {
		t.Errorf("with both slots torn Read = %v, want 1..6", s)
	}
	save(1, 2, 3, 4, 5)
	q.Close()
	q = mustOpen(t, opts)
	if s := seqs(readAll(t, q, 0)); !reflect.DeepEqual(s, []uint64{6}) {
		t.Errorf("after saving again Read = %v, want [6]", s)
	}
}

func TestSetLimits(t *testing.T) {
	q := mustOpen(t, testOptions(t, t.TempDir()))
	for i := 1; i <= 5; i++ {
		appendAll(t, q, msg(i))
	}
	q.SetLimits(5*recSize, 0, Backpressure)
	if err := q.Append(t.Context(), msg(6)); !errors.Is(err, ErrFull) {
		t.Fatalf("Append after lowering MaxBytes = %v, want ErrFull", err)
	}
	q.SetLimits(5*recSize, 0, DropOldest)
	appendAll(t, q, msg(6), msg(7))
	if st := q.Stats(); st.Dropped[reasonFull] != 2 || st.Depth != 5 {
		t.Errorf("Stats after switching to DropOldest = %+v, want 2 dropped, Depth 5", st)
	}
	q.SetLimits(0, 0, Backpressure)
	appendAll(t, q, msg(8))
}
