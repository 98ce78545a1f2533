package store

import (
	"crypto/rand"
	"encoding/binary"
	"fmt"

	bolt "go.etcd.io/bbolt"

	"github.com/quicproquo/qpq/gossip"
	"github.com/quicproquo/qpq/schemas"
)

// The receipt stream. Every receipt the node accepts is stored (its own
// budget, MaxReceiptBytes, kept for its TTL), so the stream a client
// follows to match its own receipt tags locally is served from the file:
// it survives restarts and costs no memory. Bucket rseq indexes receipt
// records by their sequence number (arrival order in this file):
//
//	rseq: seq (8) -> id (32), one entry per receipt record
//
// about 56 bytes of file per receipt with bbolt's element header, next
// to the 60 of the record and its other index entries.
//
// Meta key rseq holds the sequence number the index was complete at; an
// older build maintains no index, so when it has put records since (the
// sequence moved on) Open rebuilds the index from the records. Records an
// older build deleted leave entries behind, which readers drop.
//
// A cursor is the sequence number of the last receipt handed out, with a
// random tag of this file (meta key cursor, 1 to 65534) in its top 16
// bits, so a cursor another node gave out is recognised as foreign (but
// for a chance of 1 in 65534) and read from the oldest receipt held.
var (
	bucketRSeq = []byte("rseq")
	metaRSeq   = []byte("rseq")   // record seq the receipt index is complete at
	metaCursor = []byte("cursor") // this file's cursor tag, 1 to 65534
)

const (
	cursorShift = 48
	cursorSeq   = 1<<cursorShift - 1
	// staleScan bounds the entries one Receipts call looks at, per
	// receipt asked for, so stale entries cannot make a call unbounded.
	staleScan = 4
)

// loadReceiptIndexLocked reads or makes the cursor tag and makes sure
// the receipt index is complete; it runs inside Open's transaction,
// before putMeta records the sequence.
func (s *Store) loadReceiptIndexLocked(tx *bolt.Tx, seq uint64) error {
	meta := tx.Bucket(bucketMeta)
	tag := getU64(meta.Get(metaCursor))
	if tag == 0 || tag >= 0xffff { // never all ones: that is CursorLatest
		var b [2]byte
		for tag == 0 || tag == 0xffff {
			if _, err := rand.Read(b[:]); err != nil {
				return err
			}
			tag = uint64(binary.BigEndian.Uint16(b[:]))
		}
		if err := meta.Put(metaCursor, u64(tag)); err != nil {
			return err
		}
	}
	s.cursorTag = tag
	idx := tx.Bucket(bucketRSeq)
	if at := meta.Get(metaRSeq); idx != nil && len(at) == 8 && getU64(at) == seq {
		return nil
	}
	if idx != nil {
		if err := tx.DeleteBucket(bucketRSeq); err != nil {
			return err
		}
	}
	idx, err := tx.CreateBucket(bucketRSeq)
	if err != nil {
		return err
	}
	n := 0
	err = tx.Bucket(bucketEnv).ForEach(func(id, rec []byte) error {
		h, _, err := parseRecord(rec)
		if err != nil || h.kind != schemas.Envelope_Kind_receipt || len(id) != gossip.IDLen {
			return nil // damaged records are dropped when read
		}
		n++
		return idx.Put(u64(h.seq), clone(id))
	})
	if err != nil {
		return err
	}
	if n > 0 {
		s.log.Info("store: receipt index rebuilt", "path", s.path, "receipts", n)
	}
	return nil
}

// indexReceiptLocked adds a receipt record to the index.
func indexReceiptLocked(tx *bolt.Tx, kind schemas.Envelope_Kind, seq uint64, id []byte) error {
	if kind != schemas.Envelope_Kind_receipt {
		return nil
	}
	return tx.Bucket(bucketRSeq).Put(u64(seq), clone(id))
}

// unindexReceiptLocked removes receipt record id from the index; only
// its own entry, in case a damaged header names another's sequence.
func unindexReceiptLocked(tx *bolt.Tx, kind schemas.Envelope_Kind, seq uint64, id []byte) error {
	if kind != schemas.Envelope_Kind_receipt {
		return nil
	}
	idx := tx.Bucket(bucketRSeq)
	k := u64(seq)
	if string(idx.Get(k)) != string(id) {
		return nil
	}
	return idx.Delete(k)
}

// CursorLatest is the receipt cursor that means "from now on": Receipts
// returns none and a cursor after the newest receipt held.
const CursorLatest = ^uint64(0)

// Receipts returns the secrets of unexpired receipts held, in arrival
// order, after cursor after, at most limit of them (at least 1), and the
// cursor to pass next time. A cursor this store did not give out (0,
// another store's, or past its sequence) reads from the oldest receipt
// held; CursorLatest skips every receipt held. A damaged record is
// skipped and removed.
func (s *Store) Receipts(after uint64, limit int) (secrets [][]byte, next uint64, err error) {
	limit = max(limit, 1)
	now, _ := s.now()
	var (
		bad   []suspect
		stale [][]byte
		from  uint64
	)
	secrets = [][]byte{}
	err = s.view(func(tx *bolt.Tx) error {
		last := getU64(tx.Bucket(bucketMeta).Get(metaSeq))
		switch {
		case after == CursorLatest:
			next = last
			return nil
		case after>>cursorShift == s.cursorTag && after&cursorSeq <= last:
			from = after & cursorSeq
		}
		next = from
		env := tx.Bucket(bucketEnv)
		c := tx.Bucket(bucketRSeq).Cursor()
		k, id := c.Seek(u64(from + 1))
		for scanned := 0; k != nil && len(secrets) < limit && scanned < staleScan*limit; k, id = c.Next() {
			scanned++
			if len(k) != 8 {
				stale = append(stale, clone(k))
				continue
			}
			seq := getU64(k)
			next = seq
			rec := env.Get(id)
			h, _, perr := parseRecord(rec)
			if rec == nil || len(id) != gossip.IDLen || (perr == nil && (h.kind != schemas.Envelope_Kind_receipt || h.seq != seq)) {
				stale = append(stale, clone(k)) // left by an older build or a damaged record's removal
				continue
			}
			e, ok, derr := decodeRecord(id, rec, now)
			if derr != nil {
				bad = append(bad, suspect{id: gossip.ID(id), err: derr})
				continue
			}
			if !ok {
				continue // expired, not purged yet
			}
			secret, serr := gossip.ReceiptSecret(e)
			if serr != nil {
				bad = append(bad, suspect{id: gossip.ID(id), err: fmt.Errorf("%w: %v", ErrCorrupt, serr)})
				continue
			}
			secrets = append(secrets, clone(secret))
		}
		if k == nil {
			// Read to the end: nothing held is later than the sequence
			// committed in this snapshot.
			next = max(next, last)
		}
		return nil
	})
	s.dropDamaged(bad)
	s.dropStaleReceipts(stale)
	if err != nil {
		return [][]byte{}, after, fmt.Errorf("store: receipts: %w", err)
	}
	return secrets, s.cursorTag<<cursorShift | next&cursorSeq, nil
}

// dropStaleReceipts removes index entries whose record is gone, unless a
// receipt took the sequence number meanwhile (it cannot: numbers are not
// reused, but the check is cheap).
func (s *Store) dropStaleReceipts(keys [][]byte) {
	if len(keys) == 0 {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	_, err := s.updateLocked(func(tx *bolt.Tx, _ *txState) error {
		idx, env := tx.Bucket(bucketRSeq), tx.Bucket(bucketEnv)
		for _, k := range keys {
			if id := idx.Get(k); id != nil {
				if rec := env.Get(id); rec != nil && len(k) == 8 {
					if h, _, err := parseRecord(rec); err == nil && h.kind == schemas.Envelope_Kind_receipt && h.seq == getU64(k) {
						continue
					}
				}
			}
			if err := idx.Delete(k); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		s.log.Error("store: removing stale receipt index entries failed", "path", s.path, "err", err)
	}
}
