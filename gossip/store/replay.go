package store

import (
	"errors"
	"fmt"

	bolt "go.etcd.io/bbolt"
)

// Replay caches of onion keys (mesh/onion.Keyring): for each key, the
// tags of the packets it peeled. They live in the store because the store
// is what a reboot wipes on a router (/tmp) while the keys in the data dir
// survive: a key whose cache is gone must not be honoured again, and
// finding no cache here is how the node tells.
//
// Layout: bucket "replay" -> one bucket per key id -> tag -> empty.

var bucketReplay = []byte("replay")

// MaxReplayKey and MaxReplayTag bound a key id's and a tag's length.
const (
	MaxReplayKey = 64
	MaxReplayTag = 64
)

var errReplayArg = errors.New("replay cache: key id or tag empty or too long")

func checkReplayArg(b []byte, max int) error {
	if len(b) == 0 || len(b) > max {
		return fmt.Errorf("%w (%d bytes)", errReplayArg, len(b))
	}
	return nil
}

// ReplayCreate makes an empty replay cache for key (a no-op when it
// exists).
func (s *Store) ReplayCreate(key []byte) error {
	if err := checkReplayArg(key, MaxReplayKey); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	_, err := s.updateLocked(func(tx *bolt.Tx, _ *txState) error {
		root, err := tx.CreateBucketIfNotExists(bucketReplay)
		if err != nil {
			return err
		}
		_, err = root.CreateBucketIfNotExists(key)
		return err
	})
	if err != nil {
		return fmt.Errorf("store: create replay cache: %w", err)
	}
	return nil
}

// ReplayCount reports whether key's replay cache exists and how many tags
// it holds.
func (s *Store) ReplayCount(key []byte) (exists bool, n int, err error) {
	err = s.view(func(tx *bolt.Tx) error {
		root := tx.Bucket(bucketReplay)
		if root == nil {
			return nil
		}
		b := root.Bucket(key)
		if b == nil {
			return nil
		}
		exists, n = true, b.Stats().KeyN
		return nil
	})
	if err != nil {
		return false, 0, fmt.Errorf("store: read replay cache: %w", err)
	}
	return exists, n, nil
}

// ErrNoReplayCache is ReplayAdd's error for a key whose cache does not
// exist (never made, or dropped).
var ErrNoReplayCache = errors.New("store: no replay cache for this onion key")

// ReplayAdd records tag in key's cache, durably, and reports whether it
// was new there.
func (s *Store) ReplayAdd(key, tag []byte) (fresh bool, err error) {
	if err := checkReplayArg(key, MaxReplayKey); err != nil {
		return false, err
	}
	if err := checkReplayArg(tag, MaxReplayTag); err != nil {
		return false, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	_, err = s.updateLocked(func(tx *bolt.Tx, _ *txState) error {
		root := tx.Bucket(bucketReplay)
		if root == nil {
			return ErrNoReplayCache
		}
		b := root.Bucket(key)
		if b == nil {
			return ErrNoReplayCache
		}
		if b.Get(tag) != nil {
			return nil
		}
		fresh = true
		return b.Put(tag, []byte{})
	})
	if err != nil {
		return false, fmt.Errorf("store: replay cache: %w", err)
	}
	return fresh, nil
}

// ReplayKeys lists the keys that have a replay cache.
func (s *Store) ReplayKeys() ([][]byte, error) {
	var out [][]byte
	err := s.view(func(tx *bolt.Tx) error {
		root := tx.Bucket(bucketReplay)
		if root == nil {
			return nil
		}
		return root.ForEachBucket(func(k []byte) error {
			out = append(out, append([]byte(nil), k...))
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("store: list replay caches: %w", err)
	}
	return out, nil
}

// ReplayDrop deletes key's replay cache (its key is retired for good).
func (s *Store) ReplayDrop(key []byte) error {
	if err := checkReplayArg(key, MaxReplayKey); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	_, err := s.updateLocked(func(tx *bolt.Tx, _ *txState) error {
		root := tx.Bucket(bucketReplay)
		if root == nil || root.Bucket(key) == nil {
			return nil
		}
		return root.DeleteBucket(key)
	})
	if err != nil {
		return fmt.Errorf("store: drop replay cache: %w", err)
	}
	return nil
}
