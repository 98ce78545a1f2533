package store

import (
	"bytes"
	"fmt"

	bolt "go.etcd.io/bbolt"

	"github.com/quicproquo/qpq/gossip"
	"github.com/quicproquo/qpq/schemas"
)

// rangeBatch is how many ids IDRange reads per transaction: more than
// IDs' idsBatch, as each batch starts with a seek that costs about as much
// as reading a few hundred ids, and a transaction of 1024 ids still holds
// the file for well under a millisecond.
const rangeBatch = 1024

// IDRange calls fn with the id and kind of every unexpired envelope whose
// id is in [start, end), in id order, until fn returns false. An empty
// start is the first id, an empty end past the last. It seeks the
// envelope bucket (keyed by id) to start, so it reads only the range,
// not the whole store: anti-entropy summaries of one id range are
// checked this way. Like IDs it reads a batch of ids per transaction and
// calls fn outside any, so fn may call the store; envelopes put or
// deleted while it runs may or may not be seen. A record whose header
// does not parse is skipped here (Get and Mailbox remove it).
func (s *Store) IDRange(start, end []byte, fn func(id gossip.ID, kind schemas.Envelope_Kind) bool) error {
	type item struct {
		id   gossip.ID
		kind schemas.Envelope_Kind
	}
	now, _ := s.now()
	from := clone(start)
	skipFrom := false // from was the last id read: continue after it
	batch := make([]item, 0, rangeBatch)
	for {
		batch = batch[:0]
		more := false
		err := s.view(func(tx *bolt.Tx) error {
			c := tx.Bucket(bucketEnv).Cursor()
			var k, v []byte
			if len(from) == 0 {
				k, v = c.First()
			} else {
				k, v = c.Seek(from)
			}
			if skipFrom && k != nil && bytes.Equal(k, from) {
				k, v = c.Next()
			}
			for ; k != nil; k, v = c.Next() {
				if len(end) > 0 && bytes.Compare(k, end) >= 0 {
					return nil
				}
				if len(batch) == rangeBatch {
					more = true
					return nil
				}
				if len(k) != gossip.IDLen {
					return fmt.Errorf("%w: envelope key of %d bytes", ErrCorrupt, len(k))
				}
				from = append(from[:0], k...)
				h, _, err := parseRecord(v)
				if err != nil || h.expiresAt <= now {
					continue
				}
				batch = append(batch, item{gossip.ID(k), h.kind})
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("store: id range: %w", err)
		}
		skipFrom = true
		for _, it := range batch {
			if !fn(it.id, it.kind) {
				return nil
			}
		}
		if !more {
			return nil
		}
	}
}

// Commits is the number of write transactions committed since Open (as
// Stats reports it), cheaply: a reader that cached something derived
// from the store's contents knows it may be stale when this has moved.
func (s *Store) Commits() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.commits
}
