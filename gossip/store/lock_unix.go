//go:build unix

package store

import (
	"errors"
	"fmt"
	"os"
	"syscall"
	"time"
)

// lockFile takes the exclusive lock bbolt uses (flock), so the file can
// be checked before bbolt reads it; bbolt takes the same lock again on
// the same descriptor, which holds it already.
func lockFile(f *os.File, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		switch {
		case err == nil:
			return nil
		case !errors.Is(err, syscall.EWOULDBLOCK) && !errors.Is(err, syscall.EINTR):
			return fmt.Errorf("lock: %w", err)
		case time.Now().After(deadline):
			return fmt.Errorf("%w: waited %v for its lock", ErrLocked, timeout)
		}
		time.Sleep(min(50*time.Millisecond, timeout/4+time.Millisecond))
	}
}
