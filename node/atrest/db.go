package atrest

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	bolt "go.etcd.io/bbolt"
	bolterr "go.etcd.io/bbolt/errors"
)

// ErrBusy is returned when another process holds a file for longer than
// the DB's Timeout.
var ErrBusy = errors.New("file busy: another qpq process holds it")

// DB is a bbolt file opened for each transaction and closed right after,
// so several qpq processes of one user (a chat left open, a scripted
// send, a recv) take turns on it instead of one locking the others out
// for as long as it runs.
type DB struct {
	Path string
	// Timeout bounds the wait for another process's lock; zero: 3 s.
	Timeout time.Duration
}

func (d DB) open(readOnly bool) (*bolt.DB, error) {
	t := d.Timeout
	if t <= 0 {
		t = 3 * time.Second
	}
	if readOnly {
		if _, err := os.Stat(d.Path); err != nil {
			return nil, err
		}
	} else if err := os.MkdirAll(filepath.Dir(d.Path), 0o700); err != nil {
		return nil, fmt.Errorf("create %s: %w", filepath.Dir(d.Path), err)
	}
	db, err := bolt.Open(d.Path, 0o600, &bolt.Options{Timeout: t, ReadOnly: readOnly})
	if errors.Is(err, bolterr.ErrTimeout) {
		return nil, fmt.Errorf("%s: %w (waited %v)", d.Path, ErrBusy, t)
	}
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", d.Path, err)
	}
	return db, nil
}

// Update runs fn in a read-write transaction, creating the file (0600)
// when it is missing.
func (d DB) Update(fn func(tx *bolt.Tx) error) error {
	db, err := d.open(false)
	if err != nil {
		return err
	}
	err = db.Update(fn)
	if cerr := db.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("close %s: %w", d.Path, cerr)
	}
	return err
}

// View runs fn in a read-only transaction; a missing file returns an
// error matching os.ErrNotExist.
func (d DB) View(fn func(tx *bolt.Tx) error) error {
	db, err := d.open(true)
	if err != nil {
		return err
	}
	err = db.View(fn)
	db.Close()
	return err
}
