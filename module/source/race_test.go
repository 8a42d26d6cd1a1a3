//go:build race

package source

// raceEnabled: the race detector's instrumentation allocates.
const raceEnabled = true
