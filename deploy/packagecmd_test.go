package main

import (
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/edgetpm/edgetpm/internal/cli"
)

// The packages' time is SOURCE_DATE_EPOCH, else the commit's.
func TestSourceTime(t *testing.T) {
	env := func(v string) func(string) string {
		return func(k string) string {
			if k == "SOURCE_DATE_EPOCH" {
				return v
			}
			return ""
		}
	}
	got, err := sourceTime(t.Context(), "..", env("1767225600"))
	if want := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC); err != nil || !got.Equal(want) {
		t.Errorf("sourceTime(SOURCE_DATE_EPOCH=1767225600) = %v, %v; want %v", got, err, want)
	}
	for _, bad := range []string{"yesterday", "-5", "0"} {
		if got, err := sourceTime(t.Context(), "..", env(bad)); !cli.IsUsage(err) {
			t.Errorf("sourceTime(SOURCE_DATE_EPOCH=%q) = %v, %v; want a usage error", bad, got, err)
		}
	}
	out, err := exec.Command("git", "-C", "..", "log", "-1", "--format=%ct").Output()
	if err != nil {
		t.Skipf("no git history here: %v", err)
	}
	sec, _ := strconv.ParseInt(strings.TrimSpace(string(out)), 10, 64)
	if got, err := sourceTime(t.Context(), "..", env("")); err != nil || got.Unix() != sec {
		t.Errorf("sourceTime without SOURCE_DATE_EPOCH = %v, %v; want the commit's, %v", got, err, time.Unix(sec, 0).UTC())
	}
}
