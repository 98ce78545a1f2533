package store

import (
	"encoding/binary"
	"fmt"
	"sync"
	"time"

	"github.com/quicproquo/qpq/gossip"
	"github.com/quicproquo/qpq/schemas"
)

// Storage format 1. Add only, never change: a node must keep reading the
// files an older build wrote. Times in the file are "elapsed" readings
// (nanoseconds the store has been holding things, see Store), never wall
// clock times, except metaWall. Integers are big-endian so keys sort.
// Nothing in the file says who handed an envelope to this node.
//
// Format 2 adds compact receipt records (record format 2 below). A
// format 1 file is read as it is and marked format 2 at Open, so that an
// older build, which cannot read those records, refuses the file instead
// of failing on them later.
const formatVersion = 2

// Buckets.
var (
	bucketMeta    = []byte("meta")    // metaKey* -> value
	bucketEnv     = []byte("env")     // id -> record (header, then the encoded envelope)
	bucketDest    = []byte("dest")    // destination || seq -> id; not for decoys without one
	bucketTag     = []byte("tag")     // receipt tag || id -> empty
	bucketExp     = []byte("exp")     // expiresAt || id -> kind (2 bytes)
	bucketMbox    = []byte("mbox")    // destination -> bytes its records take (8 bytes)
	bucketTomb    = []byte("tomb")    // id -> tombstone expiresAt (8 bytes)
	bucketTombExp = []byte("tombexp") // tombstone expiresAt || id -> empty

	allBuckets = [][]byte{bucketMeta, bucketEnv, bucketDest, bucketTag, bucketExp, bucketMbox, bucketTomb, bucketTombExp}
)

// Keys in bucketMeta; every value is 8 bytes except metaFormat (4).
var (
	metaFormat     = []byte("format")     // formatVersion
	metaElapsed    = []byte("elapsed")    // elapsed reading at the last write
	metaWall       = []byte("wall")       // wall clock (Unix ns) at the same moment
	metaSeq        = []byte("seq")        // last sequence number given to a record
	metaEnvelopes  = []byte("envelopes")  // records in bucketEnv
	metaBytes      = []byte("bytes")      // total length of those records
	metaTombstones = []byte("tombstones") // entries in bucketTomb
)

// Record header, in front of the record's body:
//
//	offset size
//	0      1    record format: 1, the body is the encoded envelope (gossip
//	            Marshal form, holding the capped TTL at receipt and the
//	            capped hop limit); 2, a receipt, whose body is its hop
//	            limit (1 byte) and secret (gossip.SecretLen): every other
//	            field follows from the secret (gossip.NewReceipt), so a
//	            receipt takes 60 bytes instead of about 400
//	1      2    kind
//	3      8    expiresAt (elapsed)
//	11     8    seq (arrival order in this file)
//	19     8    source slot masked with a per-process key (see sources)
const (
	recFormat        = 1
	recFormatReceipt = 2
	recHeaderLen     = 27
)

type recHeader struct {
	format    byte // recFormat unless set
	kind      schemas.Envelope_Kind
	expiresAt time.Duration
	seq       uint64
	srcMask   uint64
}

// encodeInPlace writes the header into the first recHeaderLen bytes of
// rec, a record recordBody built.
func (h *recHeader) encodeInPlace(rec []byte) {
	h.encodeTo(rec[:0:recHeaderLen], nil)
}

// encodeTo is encode appending to dst (which must be empty), so a caller
// can place the record in a buffer it carves other keys from.
func (h *recHeader) encodeTo(dst, body []byte) []byte {
	b := append(dst, make([]byte, recHeaderLen)...)
	b[0] = h.format
	if b[0] == 0 {
		b[0] = recFormat
	}
	binary.BigEndian.PutUint16(b[1:], uint16(h.kind))
	binary.BigEndian.PutUint64(b[3:], uint64(h.expiresAt))
	binary.BigEndian.PutUint64(b[11:], h.seq)
	binary.BigEndian.PutUint64(b[19:], h.srcMask)
	return append(b, body...)
}

// parseRecord splits a record; body aliases rec.
func parseRecord(rec []byte) (h recHeader, body []byte, err error) {
	if len(rec) < recHeaderLen || (rec[0] != recFormat && rec[0] != recFormatReceipt) {
		return h, nil, fmt.Errorf("%w: record of %d bytes with format %d", ErrCorrupt, len(rec), firstByte(rec))
	}
	h.format = rec[0]
	h.kind = schemas.Envelope_Kind(binary.BigEndian.Uint16(rec[1:]))
	h.expiresAt = time.Duration(binary.BigEndian.Uint64(rec[3:]))
	h.seq = binary.BigEndian.Uint64(rec[11:])
	h.srcMask = binary.BigEndian.Uint64(rec[19:])
	if h.expiresAt < 0 {
		return h, nil, fmt.Errorf("%w: record expiry %d out of range", ErrCorrupt, uint64(h.expiresAt))
	}
	return h, rec[recHeaderLen:], nil
}

func firstByte(b []byte) int {
	if len(b) == 0 {
		return -1
	}
	return int(b[0])
}

// decodeRecord decodes and checks a stored envelope (the id is
// recomputed, so a damaged record is caught) and sets its remaining TTL.
func decodeRecord(id []byte, rec []byte, now time.Duration) (gossip.Envelope, bool, error) {
	h, body, err := parseRecord(rec)
	if err != nil {
		return gossip.Envelope{}, false, err
	}
	if h.expiresAt <= now {
		return gossip.Envelope{}, false, nil
	}
	e, err := recordEnvelope(h, body)
	if err != nil {
		return gossip.Envelope{}, false, fmt.Errorf("record %x: %w", id, err)
	}
	if string(e.ID[:]) != string(id) {
		return gossip.Envelope{}, false, fmt.Errorf("%w: record %x holds envelope %v", ErrCorrupt, id, e.ID)
	}
	e.TTLSeconds = ttlSeconds(h.expiresAt - now)
	return e, true, nil
}

// recordBody is the header format and body a record of e takes. The
// body is appended to dst after recHeaderLen bytes left for the header
// (see recHeader.encodeInPlace), so the record is built where it is
// kept.
func recordBody(e *gossip.Envelope, dst []byte) (byte, []byte, error) {
	dst = append(dst, make([]byte, recHeaderLen)...)
	if e.Kind == schemas.Envelope_Kind_receipt && len(e.ReceiptTag) == 0 {
		if k, err := gossip.ReceiptSecret(*e); err == nil {
			if r, err := gossip.NewReceipt(k, 0, e.HopLimit); err == nil && r.ID == e.ID {
				return recFormatReceipt, append(append(dst, e.HopLimit), k...), nil
			}
		}
	}
	rec, err := e.AppendMarshal(dst)
	return recFormat, rec, err
}

// recBufs holds the buffers records are built in before their put. bbolt
// keeps a put's value only until its transaction ends (it copies values
// into its pages on commit), so a buffer goes back once the transactions
// of its Apply are over.
var recBufs = sync.Pool{New: func() any { return new([]byte) }}

// recBufKeep is the largest buffer worth keeping in recBufs; a larger
// one (a big post) is left to the GC so the pool does not pin it.
const recBufKeep = 8 << 10

// recordEnvelope decodes a record's body (its TTL is left to the caller;
// the id is not checked).
func recordEnvelope(h recHeader, body []byte) (gossip.Envelope, error) {
	if h.format == recFormatReceipt {
		if len(body) != 1+gossip.SecretLen {
			return gossip.Envelope{}, fmt.Errorf("%w: receipt record body of %d bytes", ErrCorrupt, len(body))
		}
		e, err := gossip.NewReceipt(body[1:], 0, body[0])
		if err != nil {
			return gossip.Envelope{}, fmt.Errorf("%w: %v", ErrCorrupt, err)
		}
		return e, nil
	}
	e, err := gossip.Unmarshal(body)
	if err != nil {
		return gossip.Envelope{}, fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	return e, nil
}

// indexFields reads the destination and receipt tag of a record's body
// without checking its id (deletes only need the index keys). The
// results are copies.
func indexFields(h recHeader, body []byte) (dest, tag []byte, err error) {
	if h.format == recFormatReceipt {
		if len(body) != 1+gossip.SecretLen {
			return nil, nil, fmt.Errorf("%w: receipt record body of %d bytes", ErrCorrupt, len(body))
		}
		t := gossip.ReceiptTag(body[1:])
		return t[:], nil, nil
	}
	msg, err := schemas.Unmarshal(body)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	s, err := schemas.ReadRootEnvelope(msg)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	d, err := s.Destination()
	if err != nil {
		return nil, nil, fmt.Errorf("%w: destination: %v", ErrCorrupt, err)
	}
	t, err := s.ReceiptTag()
	if err != nil {
		return nil, nil, fmt.Errorf("%w: receipt tag: %v", ErrCorrupt, err)
	}
	return clone(d), clone(t), nil
}

// ttlSeconds rounds a remaining time down, so holding an envelope never
// lengthens its life.
func ttlSeconds(d time.Duration) uint32 {
	s := d / time.Second
	if s > 1<<32-1 {
		return 1<<32 - 1
	}
	return uint32(s)
}

func clone(b []byte) []byte {
	if len(b) == 0 {
		return nil
	}
	return append([]byte(nil), b...)
}

// u64 returns a fresh 8-byte big-endian buffer: bbolt keeps key and value
// slices until commit, so no buffer is reused inside a transaction.
func u64(v uint64) []byte {
	return binary.BigEndian.AppendUint64(make([]byte, 0, 8), v)
}

func getU64(b []byte) uint64 {
	if len(b) != 8 {
		return 0
	}
	return binary.BigEndian.Uint64(b)
}

// cat concatenates into a fresh buffer.
// slab hands out pieces of one allocation, so the keys and values of a
// put cost one allocation instead of one each. A piece is capped at its
// length, so an append to it cannot run into the next piece. bbolt keeps
// the pieces until the transaction ends; the slab is never reused, so
// nothing is overwritten under it.
type slab []byte

// take returns the concatenation of parts as a piece of the slab,
// falling back to its own allocation when the slab is short.
func (s *slab) take(parts ...[]byte) []byte {
	n := 0
	for _, p := range parts {
		n += len(p)
	}
	if n > cap(*s)-len(*s) {
		return cat(parts...)
	}
	start := len(*s)
	for _, p := range parts {
		*s = append(*s, p...)
	}
	return (*s)[start:len(*s):len(*s)]
}

func cat(parts ...[]byte) []byte {
	n := 0
	for _, p := range parts {
		n += len(p)
	}
	b := make([]byte, 0, n)
	for _, p := range parts {
		b = append(b, p...)
	}
	return b
}
