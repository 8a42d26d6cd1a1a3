package source

import (
	"bytes"
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/edgetpm/edgetpm/internal/testharness/until"
	"github.com/edgetpm/edgetpm/module/twin"
)

// A caFile the twin names that is not a regular file fails the source's
// connection attempts with the reason in its Stats; it neither blocks
// Apply (a FIFO without a writer) nor exhausts memory (/dev/zero), and
// the other sources keep running.
func TestCAFileNotRegular(t *testing.T) {
	fifo := filepath.Join(t.TempDir(), "ca.fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	m := newManager(t, &memQueue{}, nil, testLog(t))
	run(t, m)
	t.Cleanup(func() {
		// Frees an open stuck on the FIFO, so that Run can return.
		if w, err := os.OpenFile(fifo, os.O_WRONLY|syscall.O_NONBLOCK, 0); err == nil {
			w.Close()
		}
	})
	topics := []twin.Topic{{Filter: "a/#", QoS: 1}}
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	err := m.Apply(ctx, []twin.Source{
		{Name: "fifo", URL: "ssl://127.0.0.1:1", CAFile: fifo, Topics: topics},
		{Name: "zero", URL: "ssl://127.0.0.1:1", CAFile: "/dev/zero", Topics: topics},
	}, "")
	if err != nil {
		t.Fatalf("Apply with a FIFO and a device as CA files: %v", err)
	}
	for _, name := range []string{"fifo", "zero"} {
		until.True(t, name+" failing", func() bool { return m.Stats()[name].LastError != "" })
		if st := m.Stats()[name]; !strings.Contains(st.LastError, "not a regular file") {
			t.Errorf("%s: LastError = %q, want it to say the CA file is not a regular file", name, st.LastError)
		}
	}
}

// A password is never sent to a broker in clear, even when the source
// did not come through twin.Config.Validate, which refuses it first.
func TestNoPasswordInClear(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	got := make(chan []byte, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		b := make([]byte, 512)
		n, _ := c.Read(b)
		got <- b[:n]
	}()
	m := newManager(t, &memQueue{}, func(string) string { return "s3cret-pw" }, testLog(t))
	run(t, m)
	apply(t, m, twin.Source{Name: "clear", URL: "tcp://" + ln.Addr().String(), Username: "relay", PasswordEnv: "PLANT_PASSWORD", Topics: []twin.Topic{{Filter: "a/#"}}})
	until.True(t, "the refusal", func() bool { return m.Stats()["clear"].LastError != "" })
	if st := m.Stats()["clear"]; !strings.Contains(st.LastError, "never sent over plain TCP") {
		t.Errorf("LastError = %q, want the refusal to send a password in clear", st.LastError)
	}
	select {
	case b := <-got:
		if bytes.Contains(b, []byte("s3cret-pw")) {
			t.Errorf("the broker got the password in clear: %q", b)
		}
	case <-time.After(200 * time.Millisecond):
	}
}
