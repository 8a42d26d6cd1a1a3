package main

import (
	"fmt"
	"io"
	"time"

	"github.com/rs/zerolog"
)

// logTimeFormat is IoT Edge's: "2026-11-23 10:00:00.000 +00:00".
const logTimeFormat = "2006-01-02 15:04:05.000 -07:00"

// newLogger writes the IoT Edge log format, syslog severity first
// ("<6> 2026-11-23 10:00:00.000 +00:00 message"), so GetModuleLogs and
// support bundles can filter by level. level is changed live by
// setLogLevel.
func newLogger(w io.Writer, level *logLevel) zerolog.Logger {
	cw := zerolog.ConsoleWriter{
		Out:        w,
		NoColor:    true,
		TimeFormat: logTimeFormat,
		PartsOrder: []string{zerolog.LevelFieldName, zerolog.TimestampFieldName, zerolog.MessageFieldName},
		FormatLevel: func(i any) string {
			l, _ := zerolog.ParseLevel(fmt.Sprint(i))
			return fmt.Sprintf("<%d>", severity(l))
		},
		FormatTimestamp: func(i any) string {
			t, err := time.Parse(time.RFC3339Nano, fmt.Sprint(i))
			if err != nil {
				return fmt.Sprint(i)
			}
			return t.UTC().Format(logTimeFormat)
		},
	}
	return zerolog.New(levelWriter{cw, level}).Hook(timestamp{})
}

// timestamp stamps each event with the time it is written, to the
// nanosecond. zerolog's own Timestamp formats with the package-wide
// TimeFieldFormat, whole seconds by default, which would make every
// millisecond of IoT Edge's format ".000"; this keeps the format local.
type timestamp struct{}

func (timestamp) Run(e *zerolog.Event, _ zerolog.Level, _ string) {
	e.Str(zerolog.TimestampFieldName, time.Now().UTC().Format(time.RFC3339Nano))
}

// severity maps a level to syslog's.
func severity(l zerolog.Level) int {
	switch l {
	case zerolog.TraceLevel, zerolog.DebugLevel:
		return 7
	case zerolog.InfoLevel:
		return 6
	case zerolog.WarnLevel:
		return 4
	case zerolog.ErrorLevel:
		return 3
	default:
		return 2
	}
}

// levelWriter drops events below the current level.
type levelWriter struct {
	w     io.Writer
	level *logLevel
}

func (lw levelWriter) Write(p []byte) (int, error) { return lw.w.Write(p) }

func (lw levelWriter) WriteLevel(l zerolog.Level, p []byte) (int, error) {
	if l < lw.level.get() {
		return len(p), nil
	}
	return lw.w.Write(p)
}
