package queue

import (
	"errors"
	"os"
	"syscall"
)

// fdatasync makes a file's data durable. It skips the timestamps that
// fsync also writes; the size, which appends change, is written either way.
func fdatasync(f *os.File) error {
	for {
		err := syscall.Fdatasync(int(f.Fd()))
		if !errors.Is(err, syscall.EINTR) {
			if err != nil {
				return &os.PathError{Op: "fdatasync", Path: f.Name(), Err: err}
			}
			return nil
		}
	}
}

// lockFile takes an exclusive advisory lock on f without waiting. The
// kernel drops it when the process dies, kill -9 included, so a crash never
// leaves the folder locked.
func lockFile(f *os.File) error {
	return syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
}
