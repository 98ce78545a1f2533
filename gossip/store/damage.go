package store

import (
	"bytes"
	"fmt"

	bolt "go.etcd.io/bbolt"

	"github.com/quicproquo/qpq/gossip"
)

// A record can be damaged on disk after Open checked the file's pages
// (bbolt does not checksum records): a flipped bit makes its envelope id
// not match its contents. Readers skip such a record and drop it, so one
// bad record never makes a whole mailbox unfetchable; the removal is
// logged and counted in Stats.Damaged. It is not tombstoned, so a sound
// copy from a neighbour is taken in again.

// suspect is a record a reader could not decode, or a destination index
// entry (destKey) whose record is missing.
type suspect struct {
	id      gossip.ID
	destKey []byte // its destination index key, when found through it
	err     error
}

// dropDamaged removes the suspects that are still damaged or missing.
// Readers call it after their read transaction; failures are logged,
// since the read itself succeeded.
func (s *Store) dropDamaged(bad []suspect) {
	if len(bad) == 0 {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	_, err := s.updateLocked(func(tx *bolt.Tx, st *txState) error {
		env := tx.Bucket(bucketEnv)
		for _, b := range bad {
			rec := env.Get(b.id[:])
			if rec == nil {
				if len(b.destKey) > 0 {
					if err := tx.Bucket(bucketDest).Delete(clone(b.destKey)); err != nil {
						return err
					}
				}
				continue
			}
			if _, _, err := decodeRecord(b.id[:], rec, 0); err == nil {
				continue // replaced by a sound copy meanwhile
			}
			rec = clone(rec) // deleting invalidates the page it aliases
			if err := s.removeSuspectLocked(tx, st, b, rec); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		s.log.Error("store: removing damaged records failed", "path", s.path, "err", err)
	}
}

// removeSuspectLocked removes a damaged record. When its header and index
// fields still parse and agree with how it was found, its index entries
// are removed as for a delete; otherwise as far as they can be named.
func (s *Store) removeSuspectLocked(tx *bolt.Tx, st *txState, b suspect, rec []byte) error {
	h, body, err := parseRecord(rec)
	if err == nil {
		dest, _, ierr := indexFields(h, body)
		if ierr == nil && (b.destKey == nil || bytes.Equal(cat(dest, u64(h.seq)), b.destKey)) {
			if err := s.removeLocked(tx, st, b.id, rec, b.destKey); err != nil {
				return err
			}
			if n := len(st.damaged); n == 0 || !bytes.Equal(st.damaged[n-1].id, b.id[:]) {
				st.damaged = append(st.damaged, damage{id: clone(b.id[:]), err: b.err})
			}
			return nil
		}
	}
	if err := s.removeDamagedLocked(tx, st, b.id, rec, b.destKey, b.err); err != nil {
		return fmt.Errorf("record %v: %w", b.id, err)
	}
	return nil
}
