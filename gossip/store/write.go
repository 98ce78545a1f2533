package store

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/quicproquo/qpq/gossip"
	"github.com/quicproquo/qpq/schemas"
)

// Put stores e, received from source (a client or a link, named however
// the caller likes; the name is kept in memory only). The TTL is capped
// to MaxTTL and the hop limit to MaxHops. It returns added=false with no
// error when the id is already stored or tombstoned. When Put returns
// added=true the envelope is on disk.
//
// Room is shared so that no one source starves the others, and nothing
// held is ever evicted for it (expired envelopes are purged first,
// though). Messages, receipts, bundles and descriptors each have their
// own budget. Within a budget, a source may hold at most MaxPerSource of
// messages, and at most MaxPerMailboxSource in any one mailbox; once a
// budget is more than half full, a source may hold only its fair share
// of it (seven eighths of the budget divided by the sources holding some
// of it), so the greediest source is refused first and the others still
// get in while room remains. A refusal wraps ErrSourceFull (the source holds its
// share), ErrMailboxQuota (the mailbox is full) or ErrFull (the budget
// or the store is full). An envelope that fails gossip's checks, or has
// no TTL left (ErrExpired), is refused too.
//
// Put is an Apply of one op and costs one commit; Apply stores many
// envelopes in one.
func (s *Store) Put(e gossip.Envelope, source string) (added bool, err error) {
	res, err := s.apply([]Op{{Put: &e, Source: source}})
	if err != nil {
		return false, fmt.Errorf("store: put %v: %w", e.ID, err)
	}
	return res[0].Added, res[0].Err
}

// anyExpired reports whether an expired envelope awaits Purge; a cheap
// read, so that refusing a flood of envelopes costs no writes.
func (s *Store) anyExpired() bool {
	now, _ := s.now()
	found := false
	_ = s.view(func(tx *bolt.Tx) error {
		k, _ := tx.Bucket(bucketExp).Cursor().First()
		found = len(k) >= 8 && time.Duration(binary.BigEndian.Uint64(k)) <= now
		return nil
	})
	return found
}

func isQuota(err error) bool {
	return errors.Is(err, ErrFull) || errors.Is(err, ErrSourceFull) || errors.Is(err, ErrMailboxQuota)
}

// admitLocked says why an envelope of size bytes in pool p for dest
// (empty for none) from source may not be stored, or returns nil;
// mboxUsed is what dest's mailbox holds. Errors never name the source.
func (s *Store) admitLocked(st *txState, p pool, dest []byte, mboxUsed, size int64, source string, slot uint64) error {
	used := s.src.usage(source, p)
	if limit := s.opt.perSource(p); used+size > limit {
		return fmt.Errorf("%w: the source holds %d bytes of %s, the envelope needs %d, the limit is %d",
			ErrSourceFull, used, p, size, limit)
	}
	if len(dest) > 0 {
		if mboxUsed+size > s.opt.MaxPerMailbox {
			return fmt.Errorf("%w: the mailbox holds %d bytes, the envelope needs %d, the limit is %d",
				ErrMailboxQuota, mboxUsed, size, s.opt.MaxPerMailbox)
		}
		if in := s.src.inMailbox(dest, slot); in+size > s.opt.MaxPerMailboxSource {
			return fmt.Errorf("%w: %w: the source holds %d bytes of this mailbox, the envelope needs %d, one source's limit is %d",
				ErrSourceFull, ErrMailboxQuota, in, size, s.opt.MaxPerMailboxSource)
		}
	}
	budget := s.opt.budget(p)
	if st.pools[p]+size > budget {
		return fmt.Errorf("%w: %s take %d bytes, the envelope needs %d, their limit is %d",
			ErrFull, p, st.pools[p], size, budget)
	}
	if st.bytes+size > s.opt.MaxBytes {
		return fmt.Errorf("%w: it holds %d bytes, the envelope needs %d, the limit is %d",
			ErrFull, st.bytes, size, s.opt.MaxBytes)
	}
	if st.pools[p]+size > budget/2 {
		// Contended: the greediest sources are refused first. An eighth
		// of the budget is kept back from the sharing, so that a source
		// arriving when the others hold their shares still gets in.
		fair := (budget - budget/8) / int64(s.src.users(source, p))
		if used+size > fair {
			return fmt.Errorf("%w: %s take %d of their %d bytes and the source holds %d, the envelope needs %d, its fair share is %d",
				ErrSourceFull, p, st.pools[p], budget, used, size, fair)
		}
	}
	return nil
}

func kindBytes(k schemas.Envelope_Kind) []byte {
	return binary.BigEndian.AppendUint16(make([]byte, 0, 2), uint16(k))
}

// deleteLocked removes the record rec of envelope id and its index
// entries, gives its bytes back to its source and mailbox, and
// tombstones the id.
func (s *Store) deleteLocked(tx *bolt.Tx, st *txState, id gossip.ID, rec []byte) error {
	if err := s.removeLocked(tx, st, id, rec, nil); err != nil {
		return err
	}
	return s.tombstoneLocked(tx, st, id)
}

// removeLocked removes the record rec of envelope id and its index
// entries and gives its bytes back to its source, pool and mailbox. A
// record too damaged to name its index entries is removed as far as it
// can be (see removeDamagedLocked); destKey, when known, is its entry in
// the destination index.
func (s *Store) removeLocked(tx *bolt.Tx, st *txState, id gossip.ID, rec, destKey []byte) error {
	h, body, err := parseRecord(rec)
	if err != nil {
		return s.removeDamagedLocked(tx, st, id, rec, destKey, err)
	}
	dest, tag, err := indexFields(h, body)
	if err != nil {
		return s.removeDamagedLocked(tx, st, id, rec, destKey, err)
	}
	size := int64(len(rec))
	if err := tx.Bucket(bucketEnv).Delete(id[:]); err != nil {
		return err
	}
	if err := tx.Bucket(bucketExp).Delete(cat(u64(uint64(h.expiresAt)), id[:])); err != nil {
		return err
	}
	if len(dest) > 0 {
		if err := tx.Bucket(bucketDest).Delete(cat(dest, u64(h.seq))); err != nil {
			return err
		}
		mbox := tx.Bucket(bucketMbox)
		left := int64(getU64(mbox.Get(dest))) - size
		if left > 0 {
			err = mbox.Put(dest, u64(uint64(left)))
		} else {
			err = mbox.Delete(dest)
		}
		if err != nil {
			return err
		}
	}
	if len(tag) > 0 {
		if err := tx.Bucket(bucketTag).Delete(cat(tag, id[:])); err != nil {
			return err
		}
	}
	if err := unindexReceiptLocked(tx, h.kind, h.seq, id[:]); err != nil {
		return err
	}
	st.envelopes--
	st.bytes -= size
	p := poolOf(h.kind)
	st.pools[p] -= size
	if h.seq >= s.openSeq {
		s.releaseLocked(st, release{slot: s.src.unmask(id, h.srcMask), pool: p, dest: dest, n: size})
	}
	return nil
}

// removeDamagedLocked removes a record that cannot be decoded: the
// record, its expiry entry when its header is whole, and its destination
// entry when destKey names it (the mailbox's usage drops by its size
// then). Index entries it cannot name are left behind; every reader
// skips and drops an entry whose record is missing. The removal is
// counted and logged once the transaction commits.
func (s *Store) removeDamagedLocked(tx *bolt.Tx, st *txState, id gossip.ID, rec, destKey []byte, why error) error {
	rec = clone(rec) // read after the delete below
	size := int64(len(rec))
	if err := tx.Bucket(bucketEnv).Delete(id[:]); err != nil {
		return err
	}
	var dest []byte
	if len(destKey) > 8 {
		dest = clone(destKey[:len(destKey)-8])
	}
	p := poolMessage
	if h, _, err := parseRecord(rec); err == nil {
		p = poolOf(h.kind)
		if err := tx.Bucket(bucketExp).Delete(cat(u64(uint64(h.expiresAt)), id[:])); err != nil {
			return err
		}
		if err := unindexReceiptLocked(tx, h.kind, h.seq, id[:]); err != nil {
			return err
		}
		if h.seq >= s.openSeq {
			s.releaseLocked(st, release{slot: s.src.unmask(id, h.srcMask), pool: p, dest: dest, n: size})
		}
	}
	if dest != nil {
		if err := tx.Bucket(bucketDest).Delete(clone(destKey)); err != nil {
			return err
		}
		mbox := tx.Bucket(bucketMbox)
		if left := int64(getU64(mbox.Get(dest))) - size; left > 0 {
			if err := mbox.Put(dest, u64(uint64(left))); err != nil {
				return err
			}
		} else if err := mbox.Delete(dest); err != nil {
			return err
		}
	}
	st.envelopes--
	st.bytes -= size
	st.pools[p] -= size
	st.damaged = append(st.damaged, damage{id: clone(id[:]), err: why})
	return nil
}

// tombstoneLocked remembers id for MaxTTL, forgetting the oldest
// tombstones beyond MaxTombstones.
func (s *Store) tombstoneLocked(tx *bolt.Tx, st *txState, id gossip.ID) error {
	tomb := tx.Bucket(bucketTomb)
	if tomb.Get(id[:]) != nil {
		return nil
	}
	exp := u64(uint64(st.now + s.opt.MaxTTL))
	if err := tomb.Put(clone(id[:]), exp); err != nil {
		return err
	}
	texp := tx.Bucket(bucketTombExp)
	if err := texp.Put(cat(exp, id[:]), []byte{}); err != nil {
		return err
	}
	st.tombstones++
	for st.tombstones > s.opt.MaxTombstones {
		k, _ := texp.Cursor().First()
		if k == nil {
			break
		}
		if err := dropTomb(tomb, texp, k); err != nil {
			return err
		}
		st.tombstones--
		st.tombsLost++
	}
	return nil
}

// dropTomb forgets the tombstone whose tombexp key is k.
func dropTomb(tomb, texp *bolt.Bucket, k []byte) error {
	if len(k) != 8+gossip.IDLen {
		return fmt.Errorf("%w: tombstone index key of %d bytes", ErrCorrupt, len(k))
	}
	k = clone(k)
	if err := tomb.Delete(k[8:]); err != nil {
		return err
	}
	return texp.Delete(k)
}

// Delete removes the envelope with the given id (it was delivered) and
// tombstones the id, also when it was not stored, so no copy arriving
// later is taken in. It reports whether the envelope was stored.
func (s *Store) Delete(id gossip.ID) (bool, error) {
	res, err := s.apply([]Op{{Delete: &id}})
	if err != nil {
		return false, fmt.Errorf("store: delete %v: %w", id, err)
	}
	return res[0].Deleted > 0, res[0].Err
}

// DeleteByReceiptTag deletes and tombstones every envelope whose receipt
// tag is tag (a receipt revealed the secret behind it) and returns how
// many there were.
func (s *Store) DeleteByReceiptTag(tag []byte) (int, error) {
	if tag == nil {
		tag = []byte{} // set, so the op is a DeleteTag and its length is checked
	}
	res, err := s.apply([]Op{{DeleteTag: tag}})
	if err != nil {
		return 0, fmt.Errorf("store: delete by receipt tag: %w", err)
	}
	return res[0].Deleted, res[0].Err
}

// Purge deletes expired envelopes, leaving tombstones for them, and
// forgets tombstones older than MaxTTL. It returns how many of each.
// The caller runs it on a timer; it also persists the elapsed counter,
// so a node that crashes after a long quiet spell loses little of it.
func (s *Store) Purge() (expired, tombstonesDropped int, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	expired, tombstonesDropped, err = s.purgeLocked()
	if err != nil {
		return expired, tombstonesDropped, fmt.Errorf("store: purge: %w", err)
	}
	return expired, tombstonesDropped, nil
}

func (s *Store) purgeLocked() (expired, dropped int, err error) {
	// Every full round deletes purgeBatch entries; more rounds than the
	// entries there are means a damaged index is not shrinking.
	rounds := (s.envelopes+s.tombstones)/purgeBatch + 2
	for ; rounds > 0; rounds-- {
		var e, d int
		_, err := s.updateLocked(func(tx *bolt.Tx, st *txState) error {
			e, d = 0, 0
			var keys [][]byte
			c := tx.Bucket(bucketExp).Cursor()
			for k, _ := c.First(); k != nil && len(keys) < purgeBatch; k, _ = c.Next() {
				if len(k) != 8+gossip.IDLen {
					return fmt.Errorf("%w: expiry index key of %d bytes", ErrCorrupt, len(k))
				}
				if time.Duration(binary.BigEndian.Uint64(k)) > st.now {
					break
				}
				keys = append(keys, clone(k))
			}
			env := tx.Bucket(bucketEnv)
			for _, k := range keys {
				id := gossip.ID(k[8:])
				rec := env.Get(id[:])
				if rec == nil {
					// Left behind by a damaged record's removal.
					if err := tx.Bucket(bucketExp).Delete(k); err != nil {
						return err
					}
					continue
				}
				if err := s.deleteLocked(tx, st, id, rec); err != nil {
					return err
				}
			}
			e = len(keys)

			tomb, texp := tx.Bucket(bucketTomb), tx.Bucket(bucketTombExp)
			var old [][]byte
			tc := texp.Cursor()
			for k, _ := tc.First(); k != nil && len(old) < purgeBatch; k, _ = tc.Next() {
				if len(k) < 8 || time.Duration(binary.BigEndian.Uint64(k)) > st.now {
					break
				}
				old = append(old, clone(k))
			}
			for _, k := range old {
				if err := dropTomb(tomb, texp, k); err != nil {
					return err
				}
			}
			d = len(old)
			st.tombstones -= int64(d)
			return nil
		})
		if err != nil {
			return expired, dropped, err
		}
		expired += e
		dropped += d
		if e < purgeBatch && d < purgeBatch {
			return expired, dropped, nil
		}
	}
	return expired, dropped, fmt.Errorf("%w: purge makes no progress", ErrCorrupt)
}
