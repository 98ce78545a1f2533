// Package store keeps envelopes for store and forward in one bbolt file:
// TTLs that age by the time the node has held an envelope (never by wall
// clock timestamps, which are wrong on routers without NTP), TTL and hop
// limit caps, byte budgets per kind, per source, per mailbox and per
// source in a mailbox that refuse rather than evict (see Put), tombstones
// for delivered and expired ids, and the indexes the node needs (by id,
// by destination, by receipt tag, by expiry, and receipts by arrival for
// the receipt stream, see receipts.go).
//
// Time. The store keeps one "elapsed" counter: the elapsed value persisted
// at the last write, plus the monotonic time since Open. Each envelope
// records expiresAt = elapsed at receipt + its capped TTL; its remaining
// TTL is expiresAt minus elapsed now. Every write transaction persists
// the elapsed counter together with the wall clock reading of the same
// moment. At Open, the wall clock difference since that reading is added
// as downtime only when it is positive and at most MaxTTL; a clock that
// was set years forward or back adds nothing, so it neither expires nor
// revives anything.
//
// Durability. Every Put, Delete, Apply and Purge commits (with fsync)
// before it returns, so an envelope acknowledged to a client or peer
// survives kill -9 and power loss. Apply groups many changes into one
// commit (one fsync), which is what a relay's throughput is bound by.
//
// Privacy. The file never holds who handed the node an envelope: the
// per-source quota is counted in memory only (see sources).
//
// Damage. bbolt checksums only its meta pages and trusts the rest; Open
// walks every page once before bbolt reads any (bolt_verify.go), so a
// damaged file is refused with ErrCorrupt instead of crashing or hanging
// the node at every restart.
//
// The store is safe for concurrent use. Writes are serialised; reads run
// in parallel with them.
package store

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"runtime/debug"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// initialMmapSize keeps the first mapping small: 32-bit mips can map at
// most 1 GiB in all, and a router has little RAM; bbolt grows the map as
// the file grows.
const initialMmapSize = 1 << 20

// purgeBatch bounds the deletions in one transaction, so purging a large
// backlog does not hold every dirty page in memory at once.
const purgeBatch = 512

// Store is an open store file. Create it with Open, release it with Close.
type Store struct {
	db   *bolt.DB
	path string
	opt  Options
	log  *slog.Logger

	clockMu sync.Mutex    // guards the fields below
	openAt  time.Time     // clock reading at Open, or at the last backwards step
	base    time.Duration // elapsed reading at openAt
	last    time.Duration // latest elapsed reading handed out

	group groupQueue // Apply calls waiting for the next transaction (group.go)

	mu         sync.Mutex // guards the fields below; held across every write transaction
	closed     bool
	seq        uint64 // last record sequence number used
	openSeq    uint64 // first sequence number of this process: earlier records have no source slot
	envelopes  int64
	bytes      int64
	tombstones int64
	pools      [numPools]int64 // bytes each pool's records take (not persisted: counted at Open)
	damaged    int64           // damaged records removed since Open
	commits    int64           // write transactions committed since Open
	src        *sources
	cursorTag  uint64 // this file's receipt cursor tag, set at Open (receipts.go)
}

// Stats is a snapshot of what the store holds and its limits.
type Stats struct {
	Envelopes  int64         // envelope records, including expired ones not yet purged
	Bytes      int64         // their total length, what MaxBytes bounds
	Tombstones int64         // remembered ids of delivered and expired envelopes
	Sources    int           // sources holding bytes put since Open
	Elapsed    time.Duration // the store's elapsed counter now
	Damaged    int64         // damaged records found and removed since Open (each logged)
	// Commits counts write transactions committed since Open: each is
	// one fsync on disk, what relaying costs most (make bench prints it
	// per relayed DM).
	Commits int64

	// What messages, receipts, bundles and descriptors take, each
	// bounded by its budget below.
	MessageBytes, ReceiptBytes, BundleBytes, DescriptorBytes int64

	// The limits in force: Options with their defaults filled in.
	MaxBytes                                                             int64
	MaxMessageBytes, MaxReceiptBytes, MaxBundleBytes, MaxDescriptorBytes int64
	MaxPerSource                                                         int64
	MaxPerMailbox                                                        int64
	MaxPerMailboxSource                                                  int64
	MaxTombstones                                                        int64
	MaxTTL                                                               time.Duration
	MaxHops                                                              uint8
}

// Open opens or creates the store file at path (mode 0600 when created;
// the directory must exist). It reads the whole file once to check its
// structure, then counts plausible downtime into the elapsed counter. It
// fails with ErrLocked when another process holds the file, and with
// ErrCorrupt when the file is not a store or is damaged; every error
// names the path. An existing file of 0 bytes is started afresh with a
// warning: it is what a store lost before its first commit (or wiped)
// looks like, never a normal first start.
func Open(path string, o Options) (*Store, error) {
	opt, err := o.populate()
	if err != nil {
		return nil, fmt.Errorf("store %s: %w", path, err)
	}
	if fi, err := os.Stat(path); err == nil && fi.Mode().IsRegular() && fi.Size() == 0 {
		opt.Logger.Warn("store: the existing store file is empty (0 bytes); whatever it held is lost, starting a fresh store",
			"path", path)
	}
	db, err := openBolt(path, opt.LockTimeout)
	if err != nil {
		switch {
		case errors.Is(err, berrors.ErrTimeout):
			err = fmt.Errorf("%w: waited %v for its lock", ErrLocked, opt.LockTimeout)
		case errors.Is(err, berrors.ErrInvalid), errors.Is(err, berrors.ErrChecksum),
			errors.Is(err, berrors.ErrVersionMismatch), errors.Is(err, berrors.ErrInvalidMapping):
			err = fmt.Errorf("%w: %v", ErrCorrupt, err)
		}
		return nil, fmt.Errorf("store %s: %w", path, err)
	}
	s := &Store{db: db, path: path, opt: opt, log: opt.Logger, src: newSources()}
	if err := s.load(); err != nil {
		db.Close()
		return nil, err
	}
	return s, nil
}

// openBolt opens the file, locks it, checks its pages (verifyPages),
// and only then hands the locked descriptor to bbolt: bbolt trusts its
// pages, and a damaged one can make it allocate without bound or loop.
// The panics bbolt raises on damage missed by the check become
// ErrCorrupt.
func openBolt(path string, timeout time.Duration) (db *bolt.DB, err error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	if err := lockFile(f, timeout); err != nil {
		f.Close()
		return nil, err
	}
	if err := verifyPages(f); err != nil {
		f.Close()
		return nil, err
	}
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if r := recover(); r != nil {
			f.Close()
			db, err = nil, fmt.Errorf("%w: %v", ErrCorrupt, r)
		}
	}()
	handed := false
	return bolt.Open(path, 0o600, &bolt.Options{
		Timeout:         timeout,
		InitialMmapSize: initialMmapSize,
		FreelistType:    bolt.FreelistMapType,
		// The free list is rebuilt by a scan at open (a store is at most
		// tens of MiB) instead of written at every commit: one page write
		// less per commit, 495-685 -> 840-870 msg/s on the tmpfs line.
		NoFreelistSync: true,
		OpenFile: func(string, int, os.FileMode) (*os.File, error) {
			if handed {
				return nil, errors.New("bbolt opened the file twice")
			}
			handed = true
			return f, nil
		},
	})
}

// load creates the buckets of a new file or reads the state of an old
// one, counts plausible downtime, and persists the clock.
func (s *Store) load() (err error) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		// bbolt panics on some damaged pages; a damaged file is input,
		// not a broken invariant, so say so instead of crashing.
		if r := recover(); r != nil {
			err = fmt.Errorf("store %s: %w: %v", s.path, ErrCorrupt, r)
		}
	}()
	now := s.opt.Clock.Now()
	var downtime time.Duration
	err = s.db.Update(func(tx *bolt.Tx) error {
		if fi, err := os.Stat(s.path); err != nil {
			return err
		} else if tx.Size() > fi.Size() {
			return fmt.Errorf("%w: truncated: %d bytes, its pages need %d", ErrCorrupt, fi.Size(), tx.Size())
		}
		meta := tx.Bucket(bucketMeta)
		if meta == nil {
			return s.initLocked(tx, now)
		}
		if err := checkFormat(meta.Get(metaFormat)); err != nil {
			return err
		}
		if err := meta.Put(metaFormat, []byte{0, 0, 0, formatVersion}); err != nil {
			return err
		}
		for _, name := range allBuckets {
			if tx.Bucket(name) == nil {
				return fmt.Errorf("%w: bucket %q missing", ErrCorrupt, name)
			}
		}
		vals := make(map[string]uint64)
		for _, k := range [][]byte{metaElapsed, metaWall, metaSeq, metaEnvelopes, metaBytes, metaTombstones} {
			v := meta.Get(k)
			if len(v) != 8 {
				return fmt.Errorf("%w: meta %q is %d bytes", ErrCorrupt, k, len(v))
			}
			vals[string(k)] = getU64(v)
		}
		elapsed := time.Duration(vals[string(metaElapsed)])
		s.seq = vals[string(metaSeq)]
		s.envelopes = int64(vals[string(metaEnvelopes)])
		s.bytes = int64(vals[string(metaBytes)])
		s.tombstones = int64(vals[string(metaTombstones)])
		if elapsed < 0 || s.envelopes < 0 || s.bytes < 0 || s.tombstones < 0 {
			return fmt.Errorf("%w: meta counters out of range", ErrCorrupt)
		}
		wall := time.Unix(0, int64(vals[string(metaWall)]))
		downtime = now.Sub(wall) // wall readings only: now has a monotonic one, wall does not
		if downtime > 0 && downtime <= s.opt.MaxTTL {
			elapsed += downtime
		}
		s.base, s.last = elapsed, elapsed
		if err := s.countPoolsLocked(tx); err != nil {
			return err
		}
		if err := s.loadReceiptIndexLocked(tx, s.seq); err != nil {
			return err
		}
		return putMeta(tx, elapsed, now, s.seq, s.envelopes, s.bytes, s.tombstones)
	})
	if err != nil {
		return fmt.Errorf("store %s: %w", s.path, err)
	}
	s.openAt = now
	s.openSeq = s.seq + 1
	switch {
	case downtime > 0 && downtime <= s.opt.MaxTTL:
		s.log.Info("store: downtime counted", "path", s.path, "downtime", downtime)
	case downtime != 0:
		s.log.Warn("store: wall clock moved implausibly since the last run; downtime not counted",
			"path", s.path, "moved", downtime, "max", s.opt.MaxTTL)
	}
	s.log.Debug("store: opened", "path", s.path, "envelopes", s.envelopes, "bytes", s.bytes,
		"tombstones", s.tombstones, "elapsed", s.base)
	return nil
}

// countPoolsLocked adds up what each pool's records take; pool usage is
// not persisted (the format predates it), and the records are read once
// at Open anyway.
func (s *Store) countPoolsLocked(tx *bolt.Tx) error {
	return tx.Bucket(bucketEnv).ForEach(func(_, rec []byte) error {
		p := poolMessage
		if h, _, err := parseRecord(rec); err == nil {
			p = poolOf(h.kind)
		}
		s.pools[p] += int64(len(rec))
		return nil
	})
}

func checkFormat(v []byte) error {
	if len(v) != 4 {
		return fmt.Errorf("%w: no format version", ErrCorrupt)
	}
	if f := uint32(v[0])<<24 | uint32(v[1])<<16 | uint32(v[2])<<8 | uint32(v[3]); f < 1 || f > formatVersion {
		return fmt.Errorf("%w: format %d, this build reads 1 to %d", ErrCorrupt, f, formatVersion)
	}
	return nil
}

// initLocked sets up a new file; a bbolt file holding other buckets is
// someone else's and is refused.
func (s *Store) initLocked(tx *bolt.Tx, now time.Time) error {
	other := tx.ForEach(func(name []byte, _ *bolt.Bucket) error {
		return fmt.Errorf("%w: a bbolt file that is not a qpq store (has bucket %q)", ErrCorrupt, name)
	})
	if other != nil {
		return other
	}
	for _, name := range allBuckets {
		if _, err := tx.CreateBucket(name); err != nil {
			return err
		}
	}
	if err := tx.Bucket(bucketMeta).Put(metaFormat, []byte{0, 0, 0, formatVersion}); err != nil {
		return err
	}
	if err := s.loadReceiptIndexLocked(tx, 0); err != nil {
		return err
	}
	return putMeta(tx, 0, now, 0, 0, 0, 0)
}

func putMeta(tx *bolt.Tx, elapsed time.Duration, wall time.Time, seq uint64, envelopes, bytes, tombstones int64) error {
	meta := tx.Bucket(bucketMeta)
	for _, kv := range []struct {
		k []byte
		v uint64
	}{
		{metaElapsed, uint64(elapsed)},
		{metaWall, uint64(wall.UnixNano())},
		{metaSeq, seq},
		{metaEnvelopes, uint64(envelopes)},
		{metaBytes, uint64(bytes)},
		{metaTombstones, uint64(tombstones)},
		{metaRSeq, seq}, // this build keeps the receipt index complete
	} {
		if err := meta.Put(kv.k, u64(kv.v)); err != nil {
			return err
		}
	}
	return nil
}

// now returns the elapsed counter and the clock reading it came from.
// The counter never goes backwards: a clock without monotonic readings
// (a fake one) that steps back is taken as a new starting point.
func (s *Store) now() (time.Duration, time.Time) {
	s.clockMu.Lock()
	defer s.clockMu.Unlock()
	t := s.opt.Clock.Now()
	d := t.Sub(s.openAt)
	if d < 0 {
		s.openAt, s.base, d = t, s.last, 0
	}
	el := max(s.base+d, s.last)
	s.last = el
	return el, t
}

// txState is a write transaction's view of the counters; the Store takes
// it over only once the transaction has committed.
type txState struct {
	now        time.Duration
	seq        uint64
	envelopes  int64
	bytes      int64
	tombstones int64
	pools      [numPools]int64
	srcUndo    []srcUndo // per-source charges and releases made so far, undone unless it commits
	tombsLost  int       // tombstones dropped early to stay under MaxTombstones
	damaged    []damage  // damaged records removed, logged after commit
}

type release struct {
	slot uint64
	pool pool
	dest []byte
	n    int64
}

type charge struct {
	name string
	slot uint64
	pool pool
	dest []byte
	n    int64
}

type damage struct {
	id  []byte
	err error
}

// chargeLocked charges a put's bytes to its source now, so that later
// ops of the same transaction see them; undone unless it commits.
func (s *Store) chargeLocked(st *txState, c charge) {
	st.srcUndo = append(st.srcUndo, s.src.charge(c))
}

// releaseLocked gives a deleted record's bytes back to its source now;
// undone unless the transaction commits.
func (s *Store) releaseLocked(st *txState, r release) {
	st.srcUndo = append(st.srcUndo, s.src.release(r))
}

// update runs fn in a write transaction that also persists the clock and
// counters; s.mu must be held. In-memory state changes only if it commits:
// the counters are taken over then, and the per-source accounting fn
// changed as it went is undone otherwise.
func (s *Store) updateLocked(fn func(tx *bolt.Tx, st *txState) error) (*txState, error) {
	if s.closed {
		return nil, ErrClosed
	}
	now, wall := s.now()
	st := &txState{now: now, seq: s.seq, envelopes: s.envelopes, bytes: s.bytes, tombstones: s.tombstones, pools: s.pools}
	err := s.safely(func() error {
		return s.db.Update(func(tx *bolt.Tx) error {
			if err := fn(tx, st); err != nil {
				return err
			}
			return putMeta(tx, now, wall, st.seq, st.envelopes, st.bytes, st.tombstones)
		})
	})
	if err != nil {
		for i := len(st.srcUndo) - 1; i >= 0; i-- {
			s.src.undo(st.srcUndo[i])
		}
		return nil, err
	}
	s.seq, s.envelopes, s.bytes, s.tombstones, s.pools = st.seq, st.envelopes, st.bytes, st.tombstones, st.pools
	s.commits++
	for _, d := range st.damaged {
		s.damaged++
		s.log.Error("store: removed a damaged record; the rest is delivered", "path", s.path, "id", fmt.Sprintf("%x", d.id), "err", d.err)
	}
	if st.tombsLost > 0 {
		s.log.Debug("store: tombstones forgotten early to stay under the limit", "n", st.tombsLost, "max", s.opt.MaxTombstones)
	}
	return st, nil
}

// view runs a read transaction.
func (s *Store) view(fn func(tx *bolt.Tx) error) error {
	return s.safely(func() error { return s.db.View(fn) })
}

// safely runs a transaction, turning the panics bbolt raises on damaged
// pages (and faults on a file truncated under us) into ErrCorrupt: the
// file is input, and a node that crashes on it would crash again at
// every restart. bbolt rolls the transaction back before this recovers.
func (s *Store) safely(fn func() error) (err error) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if r := recover(); r != nil {
			s.log.Error("store: transaction panicked; treating the file as corrupt",
				"path", s.path, "panic", r, "stack", string(debug.Stack()))
			err = fmt.Errorf("%w: %s: %v", ErrCorrupt, s.path, r)
		}
	}()
	err = fn()
	if errors.Is(err, berrors.ErrDatabaseNotOpen) {
		return ErrClosed
	}
	return err
}

// Stats returns what the store holds now and its limits.
func (s *Store) Stats() Stats {
	el, _ := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	return Stats{
		Envelopes:           s.envelopes,
		Bytes:               s.bytes,
		Tombstones:          s.tombstones,
		Sources:             s.src.count(),
		Elapsed:             el,
		Damaged:             s.damaged,
		Commits:             s.commits,
		MessageBytes:        s.pools[poolMessage],
		ReceiptBytes:        s.pools[poolReceipt],
		BundleBytes:         s.pools[poolBundle],
		DescriptorBytes:     s.pools[poolDescriptor],
		MaxBytes:            s.opt.MaxBytes,
		MaxMessageBytes:     s.opt.messageBytes(),
		MaxReceiptBytes:     s.opt.MaxReceiptBytes,
		MaxBundleBytes:      s.opt.MaxBundleBytes,
		MaxDescriptorBytes:  s.opt.MaxDescriptorBytes,
		MaxPerSource:        s.opt.MaxPerSource,
		MaxPerMailbox:       s.opt.MaxPerMailbox,
		MaxPerMailboxSource: s.opt.MaxPerMailboxSource,
		MaxTombstones:       s.opt.MaxTombstones,
		MaxTTL:              s.opt.MaxTTL,
		MaxHops:             s.opt.MaxHops,
	}
}

// Path returns the file the store was opened from.
func (s *Store) Path() string { return s.path }

// Close persists the clock and closes the file. It is safe to call more
// than once; later calls return nil.
func (s *Store) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	_, perr := s.updateLocked(func(*bolt.Tx, *txState) error { return nil })
	s.closed = true
	cerr := s.db.Close()
	if err := errors.Join(perr, cerr); err != nil {
		return fmt.Errorf("store %s: close: %w", s.path, err)
	}
	return nil
}
