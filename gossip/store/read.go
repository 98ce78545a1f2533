package store

import (
	"bytes"
	"encoding/binary"
	"fmt"

	bolt "go.etcd.io/bbolt"

	"github.com/quicproquo/qpq/gossip"
	"github.com/quicproquo/qpq/schemas"
)

// Get returns the envelope with the given id, its TTLSeconds set to the
// time it has left. An expired envelope not purged yet is not found, nor
// is a damaged one (it is removed, see dropDamaged).
func (s *Store) Get(id gossip.ID) (gossip.Envelope, bool, error) {
	now, _ := s.now()
	var e gossip.Envelope
	var found bool
	var bad []suspect
	err := s.view(func(tx *bolt.Tx) error {
		rec := tx.Bucket(bucketEnv).Get(id[:])
		if rec == nil {
			return nil
		}
		var err error
		if e, found, err = decodeRecord(id[:], rec, now); err != nil {
			bad = append(bad, suspect{id: id, err: err})
		}
		return nil
	})
	s.dropDamaged(bad)
	if err != nil {
		return gossip.Envelope{}, false, fmt.Errorf("store: get %v: %w", id, err)
	}
	return e, found, nil
}

// Mailbox returns the unexpired envelopes addressed to dest, oldest
// first, at most limit of them (all when limit <= 0, which the mailbox
// quota bounds). The result is never nil. A damaged record is skipped
// and removed (see dropDamaged): the rest is delivered.
func (s *Store) Mailbox(dest []byte, limit int) ([]gossip.Envelope, error) {
	out := []gossip.Envelope{}
	if len(dest) != gossip.DestLen {
		return out, fmt.Errorf("store: mailbox: destination is %d bytes, want %d", len(dest), gossip.DestLen)
	}
	now, _ := s.now()
	var bad []suspect
	err := s.view(func(tx *bolt.Tx) error {
		env := tx.Bucket(bucketEnv)
		c := tx.Bucket(bucketDest).Cursor()
		for k, id := c.Seek(dest); k != nil && bytes.HasPrefix(k, dest); k, id = c.Next() {
			if len(id) != gossip.IDLen || len(k) != len(dest)+8 {
				bad = append(bad, suspect{destKey: clone(k), err: fmt.Errorf("%w: mailbox index entry of %d+%d bytes", ErrCorrupt, len(k), len(id))})
				continue
			}
			rec := env.Get(id)
			if rec == nil {
				bad = append(bad, suspect{id: gossip.ID(id), destKey: clone(k)})
				continue
			}
			e, ok, err := decodeRecord(id, rec, now)
			if err != nil {
				bad = append(bad, suspect{id: gossip.ID(id), destKey: clone(k), err: err})
				continue
			}
			if !ok {
				continue
			}
			out = append(out, e)
			if limit > 0 && len(out) >= limit {
				break
			}
		}
		return nil
	})
	s.dropDamaged(bad)
	if err != nil {
		return []gossip.Envelope{}, fmt.Errorf("store: mailbox: %w", err)
	}
	return out, nil
}

// Has reports whether id is stored (expired or not) or tombstoned: an
// envelope with that id is not wanted. It reports false after Close.
func (s *Store) Has(id gossip.ID) bool {
	has := false
	_ = s.view(func(tx *bolt.Tx) error {
		has = tx.Bucket(bucketEnv).Get(id[:]) != nil || tx.Bucket(bucketTomb).Get(id[:]) != nil
		return nil
	})
	return has
}

// idsBatch is how many ids IDs reads per transaction; fn runs outside
// any transaction, so it may call the store.
const idsBatch = 256

// IDs calls fn with the id and kind of every unexpired envelope, in no
// particular order, until fn returns false. Envelopes put or deleted
// while it runs may or may not be seen.
func (s *Store) IDs(fn func(id gossip.ID, kind schemas.Envelope_Kind) bool) error {
	type item struct {
		id   gossip.ID
		kind schemas.Envelope_Kind
	}
	now, _ := s.now()
	// Unexpired entries sort after now in the expiry index.
	from := cat(u64(uint64(now)), bytes.Repeat([]byte{0xff}, gossip.IDLen))
	batch := make([]item, 0, idsBatch)
	for {
		batch = batch[:0]
		err := s.view(func(tx *bolt.Tx) error {
			c := tx.Bucket(bucketExp).Cursor()
			k, v := c.Seek(from)
			if k != nil && bytes.Equal(k, from) {
				k, v = c.Next()
			}
			for ; k != nil && len(batch) < idsBatch; k, v = c.Next() {
				if len(k) != 8+gossip.IDLen || len(v) != 2 {
					return fmt.Errorf("%w: expiry index entry of %d+%d bytes", ErrCorrupt, len(k), len(v))
				}
				if bytes.Compare(k, from) <= 0 { // keys must grow, or this would not end
					return fmt.Errorf("%w: expiry index out of order", ErrCorrupt)
				}
				batch = append(batch, item{gossip.ID(k[8:]), schemas.Envelope_Kind(binary.BigEndian.Uint16(v))})
				from = clone(k)
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("store: ids: %w", err)
		}
		for _, it := range batch {
			if !fn(it.id, it.kind) {
				return nil
			}
		}
		if len(batch) < idsBatch {
			return nil
		}
	}
}
