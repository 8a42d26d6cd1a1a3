package main

import (
	"fmt"
	"io"
	"time"
)

// Exit codes of provision: which step failed.
const (
	exitTPM      = 3
	exitRegister = 4
	exitConfig   = 5
	exitApply    = 6
	exitImages   = 7
	exitHealth   = 8
)

// stepError is a step of provision that failed; its code is the exit code.
type stepError struct {
	step string
	code int
	err  error
}

func (e *stepError) Error() string { return e.step + ": " + e.err.Error() }
func (e *stepError) Unwrap() error { return e.err }

// ExitCode is the step's code, for cli.ExitCode.
func (e *stepError) ExitCode() int { return e.code }

// Step outcomes.
const (
	stepChanged   = "changed"
	stepUnchanged = "unchanged"
	stepSkipped   = "skipped"
	stepFailed    = "failed"
)

// step is one line of provision's progress and of its JSON report.
type step struct {
	Name     string  `json:"step"`
	Status   string  `json:"status"`
	Detail   string  `json:"detail"`
	Duration float64 `json:"seconds"`
}

// steps runs provision's steps in order, printing a line for each.
type steps struct {
	out   io.Writer
	total int
	done  []step
}

// run runs one step. fn returns the outcome and a line about it; a failure
// stops provision with the step's exit code.
func (s *steps) run(name string, code int, fn func() (status, detail string, err error)) error {
	start := time.Now()
	status, detail, err := fn()
	if err != nil {
		status, detail = stepFailed, err.Error()
	}
	st := step{name, status, detail, time.Since(start).Seconds()}
	s.done = append(s.done, st)
	fmt.Fprintf(s.out, "[%d/%d] %-15s %-9s %s (%s)\n", len(s.done), s.total, name, status, detail, roundDuration(time.Since(start)))
	if err != nil {
		return &stepError{name, code, err}
	}
	return nil
}

// changed tells whether any step changed something.
func (s *steps) changed() bool {
	for _, st := range s.done {
		if st.Status == stepChanged {
			return true
		}
	}
	return false
}

func roundDuration(d time.Duration) time.Duration {
	if d < time.Second {
		return d.Round(time.Millisecond)
	}
	return d.Round(10 * time.Millisecond)
}
