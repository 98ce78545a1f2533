// Package gossip holds what travels between nodes and for how long: the
// envelope and its checks now; the store with TTL ageing and quotas, hop
// limits, anti-entropy, seen-sets and receipts as store and forward lands.
package gossip

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/binary"
	"errors"
	"fmt"

	"capnproto.org/go/capnp/v3"

	"github.com/quicproquo/qpq/schemas"
)

// Wire limits every relay enforces.
const (
	// PadBlock: every payload is a whole number of these.
	PadBlock = 256
	// MaxBody is the largest message body a sender may seal.
	MaxBody = 16 << 10
	// MaxPayload is the largest sealed payload a relay accepts: MaxBody
	// plus the hybrid KEM and AEAD overhead and the sealed header,
	// rounded up to PadBlock.
	MaxPayload = MaxBody + 4096
	// MaxEnvelope bounds an encoded envelope message.
	MaxEnvelope = MaxPayload + 1024
	// IDLen, DestLen and TagLen are the sizes of the fixed fields.
	IDLen   = 32
	DestLen = 32
	TagLen  = 32
)

// idLabel separates envelope ids from every other hash.
const idLabel = "qpq envelope id v1\x00"

// Errors Decode returns; each names the field that was wrong.
var (
	ErrMalformed = errors.New("malformed envelope")
	ErrBadID     = errors.New("envelope id does not match its contents")
)

// ID identifies an envelope: SHA-256 over its immutable fields.
type ID [IDLen]byte

// String is the lowercase hex form scripts see.
func (id ID) String() string { return fmt.Sprintf("%x", id[:]) }

// Envelope is the Go form of schemas.Envelope, already checked.
type Envelope struct {
	ID          ID
	Kind        schemas.Envelope_Kind
	Destination []byte // DestLen bytes, or empty for decoys
	TTLSeconds  uint32
	HopLimit    uint8
	ReceiptTag  []byte // TagLen bytes for dm, else empty
	Payload     []byte // a multiple of PadBlock, at most MaxPayload
}

// ComputeID hashes the immutable fields. TTL and hop limit change per hop
// and are left out, so any relay can recompute the id.
func ComputeID(kind schemas.Envelope_Kind, dest, receiptTag, payload []byte) ID {
	h := sha256.New()
	h.Write([]byte(idLabel))
	var hdr [2 + 3*4]byte
	hdr[0], hdr[1] = byte(kind>>8), byte(kind)
	for i, n := range []int{len(dest), len(receiptTag), len(payload)} {
		hdr[2+4*i] = byte(n >> 24)
		hdr[3+4*i] = byte(n >> 16)
		hdr[4+4*i] = byte(n >> 8)
		hdr[5+4*i] = byte(n)
	}
	h.Write(hdr[:])
	h.Write(dest)
	h.Write(receiptTag)
	h.Write(payload)
	var id ID
	h.Sum(id[:0])
	return id
}

// Check validates every field; Decode calls it, senders call it before
// sending.
func (e *Envelope) Check() error {
	if e.Kind > schemas.Envelope_Kind_decoy {
		return fmt.Errorf("%w: kind %d unknown", ErrMalformed, e.Kind)
	}
	if len(e.Destination) != DestLen && !(e.Kind == schemas.Envelope_Kind_decoy && len(e.Destination) == 0) {
		return fmt.Errorf("%w: destination is %d bytes, want %d", ErrMalformed, len(e.Destination), DestLen)
	}
	switch {
	case e.Kind == schemas.Envelope_Kind_dm && len(e.ReceiptTag) != TagLen:
		return fmt.Errorf("%w: dm receipt tag is %d bytes, want %d", ErrMalformed, len(e.ReceiptTag), TagLen)
	case e.Kind != schemas.Envelope_Kind_dm && len(e.ReceiptTag) != 0:
		return fmt.Errorf("%w: receipt tag on a %s envelope", ErrMalformed, e.Kind)
	}
	if len(e.Payload) == 0 || len(e.Payload)%PadBlock != 0 {
		return fmt.Errorf("%w: payload is %d bytes, not a positive multiple of %d", ErrMalformed, len(e.Payload), PadBlock)
	}
	if len(e.Payload) > MaxPayload {
		return fmt.Errorf("%w: payload is %d bytes, over the %d limit", ErrMalformed, len(e.Payload), MaxPayload)
	}
	want := ComputeID(e.Kind, e.Destination, e.ReceiptTag, e.Payload)
	if subtle.ConstantTimeCompare(want[:], e.ID[:]) != 1 {
		return ErrBadID
	}
	return nil
}

// FromCapnp converts and checks a received envelope. Byte slices are
// copied, so the result outlives the message.
func FromCapnp(s schemas.Envelope) (Envelope, error) {
	var e Envelope
	id, err := s.Id()
	if err != nil {
		return e, fmt.Errorf("%w: id: %v", ErrMalformed, err)
	}
	if len(id) != IDLen {
		return e, fmt.Errorf("%w: id is %d bytes, want %d", ErrMalformed, len(id), IDLen)
	}
	copy(e.ID[:], id)
	e.Kind = s.Kind()
	e.TTLSeconds = s.TtlSeconds()
	e.HopLimit = s.HopLimit()
	// The three fields are copied into one allocation (each capped at its
	// length, so an append to one cannot overwrite the next).
	dest, err := field(s.Destination, "destination")
	if err != nil {
		return e, err
	}
	tag, err := field(s.ReceiptTag, "receiptTag")
	if err != nil {
		return e, err
	}
	payload, err := field(s.Payload, "payload")
	if err != nil {
		return e, err
	}
	buf := make([]byte, 0, len(dest)+len(tag)+len(payload))
	e.Destination, buf = carve(buf, dest)
	e.ReceiptTag, buf = carve(buf, tag)
	e.Payload, _ = carve(buf, payload)
	return e, e.Check()
}

func field(get func() ([]byte, error), name string) ([]byte, error) {
	b, err := get()
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrMalformed, name, err)
	}
	return b, nil
}

// carve copies b to the front of buf's spare room and returns the copy
// (nil when b is empty, as a decoded empty field always was) and the rest.
func carve(buf, b []byte) (piece, rest []byte) {
	if len(b) == 0 {
		return nil, buf
	}
	buf = append(buf, b...)
	return buf[:len(b):len(b)], buf[len(b):len(b)]
}

// ToCapnp fills s from e.
func (e *Envelope) ToCapnp(s schemas.Envelope) error {
	if err := s.SetId(e.ID[:]); err != nil {
		return err
	}
	s.SetKind(e.Kind)
	s.SetTtlSeconds(e.TTLSeconds)
	s.SetHopLimit(e.HopLimit)
	for _, f := range []struct {
		set func([]byte) error
		v   []byte
	}{{s.SetDestination, e.Destination}, {s.SetReceiptTag, e.ReceiptTag}, {s.SetPayload, e.Payload}} {
		if len(f.v) == 0 {
			continue
		}
		if err := f.set(f.v); err != nil {
			return err
		}
	}
	return nil
}

// Marshal encodes e as a standalone Cap'n Proto message (for the store).
func (e *Envelope) Marshal() ([]byte, error) {
	msg, seg, err := capnp.NewMessage(capnp.SingleSegment(nil))
	if err != nil {
		return nil, err
	}
	// Marshal copies the segment out, so the arena goes back to capnp's
	// pool for the next envelope instead of being left to the GC.
	defer msg.Release()
	s, err := schemas.NewRootEnvelope(seg)
	if err != nil {
		return nil, err
	}
	if err := e.ToCapnp(s); err != nil {
		return nil, err
	}
	return msg.Marshal()
}

// AppendMarshal appends the bytes Marshal returns to dst, so a caller
// that keeps a buffer (or puts a header before the envelope) pays no
// allocation of its own for them.
func (e *Envelope) AppendMarshal(dst []byte) ([]byte, error) {
	msg, seg, err := capnp.NewMessage(capnp.SingleSegment(nil))
	if err != nil {
		return dst, err
	}
	defer msg.Release() // the segment is copied out below
	s, err := schemas.NewRootEnvelope(seg)
	if err != nil {
		return dst, err
	}
	if err := e.ToCapnp(s); err != nil {
		return dst, err
	}
	// The stream framing of a one-segment message (what Marshal writes):
	// the segment count less one, then the segment's length in words.
	data := seg.Data()
	dst = binary.LittleEndian.AppendUint32(dst, 0)
	dst = binary.LittleEndian.AppendUint32(dst, uint32(len(data)/8))
	return append(dst, data...), nil
}

// Unmarshal decodes and checks an envelope from bytes that came from a
// file or the network.
func Unmarshal(b []byte) (Envelope, error) {
	if len(b) > MaxEnvelope {
		return Envelope{}, fmt.Errorf("%w: %d bytes, over the %d limit", ErrMalformed, len(b), MaxEnvelope)
	}
	msg, err := schemas.Unmarshal(b)
	if err != nil {
		return Envelope{}, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	s, err := schemas.ReadRootEnvelope(msg)
	if err != nil {
		return Envelope{}, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	return FromCapnp(s)
}

// ToCapnpList writes envs into a list made by alloc (a generated
// NewEnvelopes method).
func ToCapnpList(envs []Envelope, alloc func(int32) (schemas.Envelope_List, error)) error {
	list, err := alloc(int32(len(envs)))
	if err != nil {
		return err
	}
	for i := range envs {
		if err := envs[i].ToCapnp(list.At(i)); err != nil {
			return err
		}
	}
	return nil
}

// FromCapnpList converts and checks every envelope of a received list;
// the first bad one fails the whole list, naming its index.
func FromCapnpList(list schemas.Envelope_List) ([]Envelope, error) {
	out := make([]Envelope, 0, list.Len())
	for i := 0; i < list.Len(); i++ {
		env, err := FromCapnp(list.At(i))
		if err != nil {
			return nil, fmt.Errorf("envelope %d: %w", i, err)
		}
		out = append(out, env)
	}
	return out, nil
}
