package deadletter

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func open(t *testing.T, dir string, o Options) *Store {
	t.Helper()
	s, err := Open(dir, o)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func letter(i int, body []byte) *Letter {
	return &Letter{Reason: ReasonTooLarge, Source: "mqtt:press", Topic: "plant/x", MessageID: fmt.Sprint("m", i),
		Properties: map[string]string{"line": "3"}, Body: body}
}

// Letters are durable files of mode 0600 that survive a reopen, are
// listed oldest first, fetched whole and purged; a redelivery is stored
// once.
func TestPutGetListPurge(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "deadletters")
	s := open(t, dir, Options{})
	for i := range 3 {
		if err := s.Put(letter(i, []byte(fmt.Sprint("body", i)))); err != nil {
			t.Fatal(err)
		}
	}
	again := letter(1, []byte("body1"))
	if err := s.Put(again); err != nil || again.ID != fmt.Sprintf("%016x", 1) {
		t.Fatalf("Put of a redelivery = %v, ID %s; want nil and the first letter's ID", err, again.ID)
	}
	files, _ := filepath.Glob(filepath.Join(dir, "*"+suffix))
	if len(files) != 3 {
		t.Fatalf("%d files, want 3", len(files))
	}
	for _, f := range files {
		if fi, _ := os.Stat(f); fi.Mode().Perm() != 0o600 {
			t.Errorf("%s mode %v, want 0600", f, fi.Mode().Perm())
		}
	}

	s = open(t, dir, Options{}) // reopened: indexed from disk
	if st := s.Stats(); st.Count != 3 || st.Stored[ReasonTooLarge] != 3 {
		t.Fatalf("Stats after reopen = %+v, want 3 too_large", st)
	}
	got, more, err := s.List("", 2)
	if err != nil || !more || len(got) != 2 || got[0].MessageID != "m0" || got[1].MessageID != "m1" {
		t.Fatalf("List(\"\", 2) = %v, %v, %v", got, more, err)
	}
	rest, more, _ := s.List(got[1].ID, 2)
	if more || len(rest) != 1 || rest[0].MessageID != "m2" {
		t.Fatalf("List(%s, 2) = %v, %v", got[1].ID, rest, more)
	}
	l, err := s.Get(rest[0].ID)
	if err != nil || string(l.Body) != "body2" || l.Source != "mqtt:press" || l.Properties["line"] != "3" || l.Size != 5 {
		t.Fatalf("Get = %+v, %v", l, err)
	}
	if err := s.Put(letter(7, nil)); err != nil { // the next ID follows the reopened ones
		t.Fatal(err)
	}
	if n, err := s.Purge([]string{got[0].ID, "nonsense"}, false); n != 1 || err != nil {
		t.Fatalf("Purge one = %d, %v", n, err)
	}
	if _, err := s.Get(got[0].ID); !errors.Is(err, ErrNotFound) {
		t.Errorf("Get of a purged letter = %v, want ErrNotFound", err)
	}
	if n, _ := s.Purge(nil, true); n != 3 {
		t.Errorf("Purge all = %d, want 3", n)
	}
	if st := s.Stats(); st.Count != 0 || st.Bytes != 0 || st.Added[ReasonTooLarge] != 1 {
		t.Errorf("Stats = %+v, want empty with 1 added since open", st)
	}
}

// At its bound the store refuses, counting; purging makes room. A body
// over MaxBody is kept cut, flagged, with its full size and digest.
func TestBounds(t *testing.T) {
	s := open(t, t.TempDir(), Options{MaxCount: 2, MaxBody: 10})
	for i := range 2 {
		if err := s.Put(letter(i, bytes.Repeat([]byte("x"), 100))); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Put(letter(2, nil)); !errors.Is(err, ErrFull) {
		t.Fatalf("Put past MaxCount = %v, want ErrFull", err)
	}
	l, _ := s.Get(fmt.Sprintf("%016x", 0))
	if !l.Truncated || l.Size != 100 || len(l.Body) != 10 || l.SHA256 == "" {
		t.Errorf("kept letter = size %d body %d truncated %v", l.Size, len(l.Body), l.Truncated)
	}
	if st := s.Stats(); st.Refused != 1 || st.Truncated != 2 {
		t.Errorf("Stats = %+v, want 1 refused, 2 truncated", st)
	}
	s.Purge([]string{l.ID}, false)
	if err := s.Put(letter(2, nil)); err != nil {
		t.Errorf("Put after a purge = %v", err)
	}

	b := open(t, t.TempDir(), Options{MaxBytes: 1000})
	if err := b.Put(letter(0, bytes.Repeat([]byte("x"), 2000))); !errors.Is(err, ErrFull) {
		t.Errorf("Put past MaxBytes = %v, want ErrFull", err)
	}
}

// Every answer fits in IoT Hub's 128 KB, however large the letter; get
// pages through the body and list through the letters.
func TestMethodsPage(t *testing.T) {
	s := open(t, t.TempDir(), Options{})
	body := make([]byte, 700_000)
	for i := range body {
		body[i] = byte(i * 7)
	}
	big := letter(0, body)
	big.Topic = strings.Repeat("\x01", 60_000) // escaped six times over in JSON
	big.Properties = map[string]string{}
	for i := range 300 {
		big.Properties[fmt.Sprint("k", i)] = strings.Repeat("v", 1000)
	}
	if err := s.Put(big); err != nil {
		t.Fatal(err)
	}
	for i := 1; i < 150; i++ {
		l := letter(i, []byte("x"))
		l.Topic = strings.Repeat("\x02", 5000)
		if err := s.Put(l); err != nil {
			t.Fatal(err)
		}
	}
	call := func(name string, req any) (int, map[string]json.RawMessage) {
		t.Helper()
		p, _ := json.Marshal(req)
		status, ans, ok := s.Method(name, p)
		if !ok || len(ans) > MaxAnswer {
			t.Fatalf("%s(%s) = ok %v, %d bytes; want at most %d", name, p, ok, len(ans), MaxAnswer)
		}
		var m map[string]json.RawMessage
		if err := json.Unmarshal(ans, &m); err != nil {
			t.Fatalf("%s answer %q: %v", name, ans, err)
		}
		return status, m
	}

	var got []byte
	for off := 0; ; {
		status, a := call(MethodGet, map[string]any{"id": big.ID, "offset": off})
		var chunk string
		var next int
		json.Unmarshal(a["body"], &chunk)
		json.Unmarshal(a["next"], &next)
		b, err := base64.StdEncoding.DecodeString(chunk)
		if status != 200 || err != nil || len(b) == 0 {
			t.Fatalf("get at %d: status %d, %d bytes, %v", off, status, len(b), err)
		}
		got = append(got, b...)
		if next == 0 {
			break
		}
		off = next
	}
	if !bytes.Equal(got, body) {
		t.Errorf("paged body: %d bytes, want %d", len(got), len(body))
	}

	seen := 0
	for after := ""; ; {
		status, a := call(MethodList, map[string]any{"after": after, "limit": 100})
		var letters []Letter
		json.Unmarshal(a["letters"], &letters)
		if status != 200 || len(letters) == 0 {
			t.Fatalf("list after %q: status %d, %d letters", after, status, len(letters))
		}
		seen += len(letters)
		if err := json.Unmarshal(a["next"], &after); err != nil {
			break
		}
	}
	if seen != 150 {
		t.Errorf("listed %d letters, want 150", seen)
	}
	if status, _ := call(MethodGet, map[string]any{"id": "0000000000009999"}); status != 404 {
		t.Errorf("get of an unknown id: %d, want 404", status)
	}
	if status, a := call(MethodPurge, map[string]any{"all": true}); status != 200 || string(a["purged"]) != "150" {
		t.Errorf("purge all: %d %s", status, a["purged"])
	}
	if _, _, ok := s.Method("ping", nil); ok {
		t.Error("Method took ping")
	}
}
