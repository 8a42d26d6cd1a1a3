// Package until is the tests' one way to wait for a condition that
// another goroutine or process makes true.
package until

import (
	"testing"
	"time"
)

// Timeout bounds every wait.
const Timeout = 10 * time.Second

// True polls cond every 10 ms until it holds, failing the test once
// Timeout has passed, naming what it waited for.
func True(t testing.TB, what string, cond func() bool) {
	t.Helper()
	Within(t, Timeout, what, cond)
}

// Within is True with another time limit.
func Within(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
