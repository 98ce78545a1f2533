//go:build unix

package home

import (
	"errors"
	"fmt"
	"os"
	"syscall"
	"time"
)

// lockWait bounds how long a change waits for another process's change
// (a chat and a `qpq contact` command at once) to finish.
const lockWait = 5 * time.Second

// locked runs f holding an exclusive flock on the lock file name, so that
// two processes changing one file never lose each other's change.
func (h Home) locked(name string, f func() error) error {
	if err := h.Ensure(); err != nil {
		return err
	}
	path := h.Path(name)
	lf, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("lock %s: %w", path, err)
	}
	defer lf.Close() // releases the lock
	deadline := time.Now().Add(lockWait)
	for {
		err := syscall.Flock(int(lf.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			break
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) && !errors.Is(err, syscall.EINTR) {
			return fmt.Errorf("lock %s: %w", path, err)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("lock %s: another qpq has held it for %v", path, lockWait)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return f()
}
