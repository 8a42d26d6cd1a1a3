// Package cli holds the command-line conventions edge-provisioner,
// edge-relay and edge-deploy share: one usage error, --help on stdout, and
// one mapping from errors to exit codes, each error printed once.
package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

// ExitStatus is the part of each tool's usage text that documents the exit
// codes Main gives.
const ExitStatus = "Exit status: 0 on success and for --help, 1 on failure, 2 on a usage error."

// Main runs a tool's run on a context cancelled by SIGINT or SIGTERM, with
// the arguments after the program name, and exits with ExitCode of its
// error after Report printed it.
func Main(name string, run func(ctx context.Context, args []string, stdout, stderr io.Writer) error) {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(Report(name, err, os.Stderr))
}

// Report prints err on stderr, once, as "name: err", with a hint at --help
// for a usage error, and returns its exit code. Nothing is printed for
// success or --help.
func Report(name string, err error, stderr io.Writer) int {
	code := ExitCode(err)
	if code == 0 {
		return 0
	}
	fmt.Fprintf(stderr, "%s: %v\n", name, err)
	if IsUsage(err) {
		fmt.Fprintf(stderr, "Run '%s --help' for usage.\n", name)
	}
	return code
}

// ExitCode maps err to the exit code: 0 for nil and flag.ErrHelp, 2 for a
// usage error, the code of an error with an ExitCode method (a step of
// edge-provisioner provision), 1 for any other.
func ExitCode(err error) int {
	var coded interface{ ExitCode() int }
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
		return 0
	case IsUsage(err):
		return 2
	case errors.As(err, &coded):
		return coded.ExitCode()
	default:
		return 1
	}
}

// usageError is a command line, setting or environment that cannot be
// run: the user's mistake, not a failure.
type usageError struct{ err error }

func (e *usageError) Error() string { return e.err.Error() }
func (e *usageError) Unwrap() error { return e.err }

// Usagef returns a usage error.
func Usagef(format string, args ...any) error {
	return &usageError{fmt.Errorf(format, args...)}
}

// Usage marks err as a usage error; nil stays nil.
func Usage(err error) error {
	if err == nil {
		return nil
	}
	return &usageError{err}
}

// IsUsage tells whether err is, or wraps, a usage error.
func IsUsage(err error) bool {
	var u *usageError
	return errors.As(err, &u)
}

// Parse parses the flags of a command that takes no arguments after them:
// see ParseArgs.
func Parse(fs *flag.FlagSet, args []string, stdout io.Writer) error {
	if err := ParseArgs(fs, args, stdout); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return Usagef("%s: unexpected argument %q", fs.Name(), fs.Arg(0))
	}
	return nil
}

// ParseArgs parses a command's flags, leaving its arguments in fs.Args.
// --help or -h prints fs.Usage on stdout and returns flag.ErrHelp, which
// ExitCode maps to 0; a bad flag is a usage error. Nothing else is
// printed: the error is, once, by Report.
func ParseArgs(fs *flag.FlagSet, args []string, stdout io.Writer) error {
	fs.SetOutput(io.Discard)
	err := fs.Parse(args)
	switch {
	case errors.Is(err, flag.ErrHelp):
		fs.SetOutput(stdout)
		fs.Usage()
		return err
	case err != nil:
		return Usage(err)
	}
	return nil
}
