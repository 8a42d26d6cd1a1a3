package cli

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"strings"
	"testing"
)

type codedError struct{ code int }

func (e codedError) Error() string { return fmt.Sprintf("step failed with %d", e.code) }
func (e codedError) ExitCode() int { return e.code }

func TestReport(t *testing.T) {
	for _, tc := range []struct {
		name   string
		err    error
		code   int
		stderr string
	}{
		{"success", nil, 0, ""},
		{"help", fmt.Errorf("image build: %w", flag.ErrHelp), 0, ""},
		{"usage", Usagef("unknown command %q", "x"), 2, "tool: unknown command \"x\"\nRun 'tool --help' for usage.\n"},
		{"wrapped usage", fmt.Errorf("settings: %w", Usage(errors.New("bad"))), 2, "tool: settings: bad\nRun 'tool --help' for usage.\n"},
		{"failure", errors.New("tpm: connection refused"), 1, "tool: tpm: connection refused\n"},
		{"coded", fmt.Errorf("provision: %w", codedError{5}), 5, "tool: provision: step failed with 5\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var stderr bytes.Buffer
			if code := Report("tool", tc.err, &stderr); code != tc.code || stderr.String() != tc.stderr {
				t.Errorf("Report(%v) = %d, stderr %q; want %d, %q", tc.err, code, stderr.String(), tc.code, tc.stderr)
			}
		})
	}
	if Usage(nil) != nil {
		t.Error("Usage(nil) != nil")
	}
}

func TestParse(t *testing.T) {
	newFS := func() *flag.FlagSet {
		fs := flag.NewFlagSet("tool cmd", flag.ContinueOnError)
		fs.String("out", "dist", "`folder` to write to")
		fs.Usage = func() {
			fmt.Fprintln(fs.Output(), "usage: tool cmd [flags]")
			fs.PrintDefaults()
		}
		return fs
	}
	for _, tc := range []struct {
		args   []string
		usage  bool   // a usage error
		help   bool   // flag.ErrHelp
		stdout string // contained
	}{
		{[]string{"--out", "x"}, false, false, ""},
		{[]string{"--help"}, false, true, "usage: tool cmd"},
		{[]string{"-h"}, false, true, "-out folder"},
		{[]string{"--bogus"}, true, false, ""},
		{[]string{"--out"}, true, false, ""},
		{[]string{"extra"}, true, false, ""},
	} {
		var stdout bytes.Buffer
		fs := newFS()
		err := Parse(fs, tc.args, &stdout)
		if IsUsage(err) != tc.usage || errors.Is(err, flag.ErrHelp) != tc.help {
			t.Errorf("Parse(%q) = %v, want usage %v, help %v", tc.args, err, tc.usage, tc.help)
		}
		if !strings.Contains(stdout.String(), tc.stdout) || tc.stdout == "" && stdout.Len() > 0 {
			t.Errorf("Parse(%q) printed %q, want %q", tc.args, stdout.String(), tc.stdout)
		}
	}
	fs := newFS()
	if err := ParseArgs(fs, []string{"--out", "x", "a", "b"}, new(bytes.Buffer)); err != nil || fs.NArg() != 2 {
		t.Errorf("ParseArgs with arguments = %v, %q", err, fs.Args())
	}
}
