package store

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/quicproquo/qpq/gossip"
)

// MaxBatch is the most ops one Apply takes. Every page a batch dirties is
// held in memory until its commit, so a batch is bounded; a relay's push
// (bounded by the RPC size cap) fits well within it.
const MaxBatch = 1024

// Op is one change of a batch; exactly one of Put, DeleteTag, Delete is
// set.
type Op struct {
	Put       *gossip.Envelope // store it (as Put does), charged to Source
	Source    string           // who handed over Put (kept in memory only, see Put)
	DeleteTag []byte           // delete and tombstone every envelope with this receipt tag (as DeleteByReceiptTag)
	Delete    *gossip.ID       // delete and tombstone this id (as Delete)
}

// Result is one Op's outcome.
type Result struct {
	Added   bool  // Put: newly stored
	Deleted int   // DeleteTag/Delete: envelopes removed
	Err     error // this op refused (quota, expired, failed checks, bad tag length); others still apply
}

// errNoWrite rolls back a transaction in which no op wrote anything
// (every put a duplicate, every tag unknown): there is nothing to make
// durable, so it costs no commit and no fsync.
var errNoWrite = errors.New("no write")

// Apply makes the changes ops describe in one write transaction: one
// commit, one fsync, however many ops. They apply in order, each seeing
// the ones before it: a DeleteTag after the Put of an envelope with that
// tag deletes and tombstones it, the second Put of an id is not added,
// and quotas count what earlier puts of the batch took and earlier
// deletes gave back, exactly as the same calls one by one would.
//
// An op that is refused (the reasons Put, Delete and DeleteByReceiptTag
// give, in the same words) reports it in its Result.Err and writes
// nothing; the others still apply. A failure of the file itself (I/O,
// corruption, a closed store) fails the whole batch: Apply returns the
// error and nothing is applied. When Apply returns nil, every envelope
// reported Added is on disk.
//
// Puts refused for room while expired envelopes wait for Purge are
// retried once, after a purge, in one more transaction (as Put does). A
// retried put whose receipt tag a later DeleteTag of the batch names is
// deleted and tombstoned with it, as it would have been in order. If
// that retry fails, its puts report the error and the rest of the batch
// stays committed.
//
// More than MaxBatch ops is an error, and nothing is applied.
func (s *Store) Apply(ops []Op) ([]Result, error) {
	res, err := s.apply(ops)
	if err != nil {
		return nil, fmt.Errorf("store: apply %d ops: %w", len(ops), err)
	}
	return res, nil
}

// prepared is what a Put op stores, worked out before the lock is taken:
// the envelope with its caps applied, and its record's format and body.
type prepared struct {
	e      gossip.Envelope
	format byte
	rec    []byte  // the record, its header left to fill in
	buf    *[]byte // rec's buffer, from recBufs
}

// apply is Apply without the context in its error; Put, Delete and
// DeleteByReceiptTag add their own.
func (s *Store) apply(ops []Op) ([]Result, error) {
	if len(ops) > MaxBatch {
		return nil, fmt.Errorf("a batch of %d ops, at most %d (MaxBatch)", len(ops), MaxBatch)
	}
	res := make([]Result, len(ops))
	prep := make([]prepared, len(ops))
	defer func() {
		// Every transaction that put these records is over.
		for i := range prep {
			if p := &prep[i]; p.buf != nil && cap(p.rec) <= recBufKeep {
				*p.buf = p.rec[:0]
				recBufs.Put(p.buf)
			}
		}
	}()
	todo := make([]int, 0, len(ops)) // the ops that pass their checks
	for i := range ops {
		if err := s.prepare(&ops[i], &prep[i]); err != nil {
			res[i].Err = err
			continue
		}
		todo = append(todo, i)
	}
	if len(todo) == 0 {
		return res, nil
	}
	return s.groupCommit(ops, prep, todo, res)
}

// commitLocked writes the ops of todo (checked already; res holds the
// refusals of the others) in one transaction, with apply's retry after a
// purge; s.mu is held.
func (s *Store) commitLocked(ops []Op, prep []prepared, todo []int, res []Result) ([]Result, error) {
	out, _, err := s.applyLocked(ops, prep, todo, false)
	if err != nil {
		return nil, err
	}
	var retry []int
	for _, i := range todo {
		res[i] = out[i]
		if ops[i].Put != nil && isQuota(out[i].Err) {
			retry = append(retry, i)
		}
	}
	if len(retry) == 0 || !s.anyExpired() {
		return res, nil
	}
	// Room held by expired envelopes is free for the taking.
	if n, _, perr := s.purgeLocked(); perr != nil || n == 0 {
		return res, nil // the puts keep their refusal
	}
	out, extra, err := s.applyLocked(ops, prep, retry, true)
	for _, i := range retry {
		if err != nil {
			res[i].Err = fmt.Errorf("store: put %v: %w", prep[i].e.ID, err)
			continue
		}
		res[i] = out[i]
	}
	if err == nil {
		for j, n := range extra {
			res[j].Deleted += n
		}
	}
	return res, nil
}

// prepare checks op and, for a Put, works out its record into p. The
// error is the op's refusal, in the words of the call it stands for.
func (s *Store) prepare(op *Op, p *prepared) error {
	set := 0
	for _, b := range []bool{op.Put != nil, op.DeleteTag != nil, op.Delete != nil} {
		if b {
			set++
		}
	}
	if set != 1 {
		return fmt.Errorf("store: apply: an op sets %d of Put, DeleteTag and Delete, want exactly one", set)
	}
	switch {
	case op.DeleteTag != nil:
		if len(op.DeleteTag) != gossip.TagLen {
			return fmt.Errorf("store: delete by receipt tag: tag is %d bytes, want %d", len(op.DeleteTag), gossip.TagLen)
		}
	case op.Put != nil:
		e := *op.Put // the caller's envelope is left as it is
		if err := e.Check(); err != nil {
			return fmt.Errorf("store: put: %w", err)
		}
		if e.TTLSeconds == 0 {
			return fmt.Errorf("store: put %v: %w", e.ID, ErrExpired)
		}
		e.TTLSeconds = ttlSeconds(min(time.Duration(e.TTLSeconds)*time.Second, s.opt.MaxTTL))
		e.HopLimit = min(e.HopLimit, s.opt.MaxHops)
		buf := recBufs.Get().(*[]byte)
		format, rec, err := recordBody(&e, (*buf)[:0])
		if err != nil {
			recBufs.Put(buf)
			return fmt.Errorf("store: put %v: %w", e.ID, err)
		}
		*p = prepared{e: e, format: format, rec: rec, buf: buf}
	}
	return nil
}

// applyLocked runs the ops listed in todo (indexes into ops, in order) in
// one write transaction and returns their results, indexed like ops. In
// a retry (only puts), a put whose receipt tag a later DeleteTag of ops
// names is deleted right after it is stored, and extra counts those
// deletions by the DeleteTag's index. On error nothing is applied and
// the results are to be ignored.
func (s *Store) applyLocked(ops []Op, prep []prepared, todo []int, retry bool) (out []Result, extra map[int]int, err error) {
	out = make([]Result, len(ops))
	wrote := false
	_, err = s.updateLocked(func(tx *bolt.Tx, st *txState) error {
		for _, i := range todo {
			op := &ops[i]
			var w bool
			var err error
			switch {
			case op.Put != nil:
				p := &prep[i]
				var refused error
				out[i].Added, refused, err = s.putOpLocked(tx, st, &p.e, p.format, p.rec, op.Source)
				if refused != nil {
					out[i].Err = fmt.Errorf("store: put %v: %w", p.e.ID, refused)
				}
				w = out[i].Added
				if err == nil && w && retry {
					var j int
					if j, err = s.mirrorLaterTagLocked(tx, st, ops, i, &p.e); j >= 0 && err == nil {
						if extra == nil {
							extra = make(map[int]int)
						}
						extra[j]++
					}
				}
			case op.DeleteTag != nil:
				out[i].Deleted, w, err = s.deleteTagLocked(tx, st, op.DeleteTag)
			case op.Delete != nil:
				out[i].Deleted, w, err = s.deleteIDLocked(tx, st, *op.Delete)
			}
			if err != nil {
				return err
			}
			wrote = wrote || w
		}
		if !wrote {
			return errNoWrite
		}
		return nil
	})
	if errors.Is(err, errNoWrite) {
		return out, nil, nil
	}
	return out, extra, err
}

// mirrorLaterTagLocked deletes and tombstones e, just stored by op i of a
// retry, when a later op of the batch is a DeleteTag of its receipt tag:
// in order, that op would have deleted it. It returns that op's index,
// or -1.
func (s *Store) mirrorLaterTagLocked(tx *bolt.Tx, st *txState, ops []Op, i int, e *gossip.Envelope) (int, error) {
	if len(e.ReceiptTag) == 0 {
		return -1, nil
	}
	for j := i + 1; j < len(ops); j++ {
		if ops[j].Put == nil && ops[j].Delete == nil && bytes.Equal(ops[j].DeleteTag, e.ReceiptTag) {
			rec := tx.Bucket(bucketEnv).Get(e.ID[:])
			if rec == nil {
				return -1, nil
			}
			return j, s.deleteLocked(tx, st, e.ID, rec)
		}
	}
	return -1, nil
}

// putOpLocked stores e (already capped, its record rec worked out, the
// header to be filled in here) from
// source. It returns added=false with no error when the id is stored or
// tombstoned already, refused when a quota refuses it (checked before
// anything is written, so a refusal writes nothing), and err when the
// file fails (the whole transaction is then rolled back).
func (s *Store) putOpLocked(tx *bolt.Tx, st *txState, e *gossip.Envelope, format byte, rec []byte, source string) (added bool, refused, err error) {
	env := tx.Bucket(bucketEnv)
	if env.Get(e.ID[:]) != nil || tx.Bucket(bucketTomb).Get(e.ID[:]) != nil {
		return false, nil, nil
	}
	slot := s.src.slotFor(source)
	h := recHeader{
		format:    format,
		kind:      e.Kind,
		expiresAt: st.now + time.Duration(e.TTLSeconds)*time.Second,
		seq:       st.seq + 1,
		srcMask:   s.src.mask(e.ID, slot),
	}
	// One allocation holds every key and value below but the record
	// (bbolt keeps them until the transaction ends).
	idLen := len(e.ID)
	n := idLen + 8 + idLen + 2
	if len(e.Destination) > 0 {
		n += len(e.Destination) + 8 + idLen + len(e.Destination) + 8
	}
	if len(e.ReceiptTag) > 0 {
		n += len(e.ReceiptTag) + idLen
	}
	buf := make(slab, 0, n)
	h.encodeInPlace(rec)
	size := int64(len(rec))
	p := poolOf(e.Kind)
	mbox := tx.Bucket(bucketMbox)
	var mboxUsed int64
	if len(e.Destination) > 0 {
		mboxUsed = int64(getU64(mbox.Get(e.Destination)))
	}
	if err := s.admitLocked(st, p, e.Destination, mboxUsed, size, source, slot); err != nil {
		return false, err, nil
	}

	var num [8]byte
	be := func(v uint64) []byte { binary.BigEndian.PutUint64(num[:], v); return num[:] }
	id := buf.take(e.ID[:])
	if err := env.Put(id, rec); err != nil {
		return false, nil, err
	}
	var kind [2]byte
	binary.BigEndian.PutUint16(kind[:], uint16(e.Kind))
	if err := tx.Bucket(bucketExp).Put(buf.take(be(uint64(h.expiresAt)), e.ID[:]), buf.take(kind[:])); err != nil {
		return false, nil, err
	}
	if len(e.Destination) > 0 {
		if err := tx.Bucket(bucketDest).Put(buf.take(e.Destination, be(h.seq)), buf.take(e.ID[:])); err != nil {
			return false, nil, err
		}
		if err := mbox.Put(buf.take(e.Destination), buf.take(be(uint64(mboxUsed+size)))); err != nil {
			return false, nil, err
		}
	}
	if len(e.ReceiptTag) > 0 {
		if err := tx.Bucket(bucketTag).Put(buf.take(e.ReceiptTag, e.ID[:]), []byte{}); err != nil {
			return false, nil, err
		}
	}
	if err := indexReceiptLocked(tx, e.Kind, h.seq, e.ID[:]); err != nil {
		return false, nil, err
	}
	st.seq = h.seq
	st.envelopes++
	st.bytes += size
	st.pools[p] += size
	s.chargeLocked(st, charge{name: source, slot: slot, pool: p, dest: clone(e.Destination), n: size})
	return true, nil, nil
}

// deleteIDLocked deletes the envelope id (when stored) and tombstones
// it, also when it was not stored, so no copy arriving later is taken
// in. It returns how many it deleted (0 or 1) and whether it wrote.
func (s *Store) deleteIDLocked(tx *bolt.Tx, st *txState, id gossip.ID) (int, bool, error) {
	if rec := tx.Bucket(bucketEnv).Get(id[:]); rec != nil {
		return 1, true, s.deleteLocked(tx, st, id, rec)
	}
	if tx.Bucket(bucketTomb).Get(id[:]) != nil {
		return 0, false, nil // tombstoned already: nothing to write
	}
	return 0, true, s.tombstoneLocked(tx, st, id)
}

// deleteTagLocked deletes and tombstones every envelope whose receipt
// tag is tag; it returns how many and whether it wrote.
func (s *Store) deleteTagLocked(tx *bolt.Tx, st *txState, tag []byte) (int, bool, error) {
	var ids []gossip.ID
	c := tx.Bucket(bucketTag).Cursor()
	for k, _ := c.Seek(tag); k != nil && bytes.HasPrefix(k, tag); k, _ = c.Next() {
		if len(k) != gossip.TagLen+gossip.IDLen {
			return 0, false, fmt.Errorf("%w: receipt tag index key of %d bytes", ErrCorrupt, len(k))
		}
		ids = append(ids, gossip.ID(k[gossip.TagLen:]))
	}
	env := tx.Bucket(bucketEnv)
	n := 0
	for _, id := range ids {
		rec := env.Get(id[:])
		if rec == nil {
			// Left behind by a damaged record's removal.
			if err := tx.Bucket(bucketTag).Delete(cat(tag, id[:])); err != nil {
				return n, true, err
			}
			continue
		}
		if err := s.deleteLocked(tx, st, id, rec); err != nil {
			return n, true, err
		}
		n++
	}
	return n, len(ids) > 0, nil
}
