package main

import (
	"bytes"
	"regexp"
	"testing"
	"time"

	"github.com/rs/zerolog"
)

// The timestamp of a log line is the time it was written to the
// millisecond, not the second it fell in: IoT Edge's format has
// milliseconds, and support bundles order lines from several modules by
// them.
func TestLogTimestampMilliseconds(t *testing.T) {
	level := new(logLevel)
	level.Store(int32(zerolog.InfoLevel))
	var buf bytes.Buffer
	log := newLogger(&buf, level)
	// Away from a whole second, so that a time cut to the second is
	// before the call.
	for now := time.Now(); now.Nanosecond() < 10e6 || now.Nanosecond() > 900e6; now = time.Now() {
		time.Sleep(5 * time.Millisecond)
	}
	before := time.Now().Truncate(time.Millisecond)
	log.Info().Msg("hello")
	after := time.Now()

	m := regexp.MustCompile(`^<6> (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} \+00:00) hello\n$`).FindStringSubmatch(buf.String())
	if m == nil {
		t.Fatalf("log line %q is not in the IoT Edge format", buf.String())
	}
	at, err := time.Parse(logTimeFormat, m[1])
	if err != nil {
		t.Fatal(err)
	}
	if at.Before(before) || at.After(after) {
		t.Errorf("log line written between %s and %s says %s", before.UTC().Format(logTimeFormat), after.UTC().Format(logTimeFormat), m[1])
	}
}
