package onion

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"
)

// A message longer than one packet's payload (a sealed DM with a long
// body) travels as up to MaxFragments packets, each one payload of the
// form
//
//	kind 1 | message id 16 | index 1 | count 1 | length 2 | data | zeros
//
// which the exit puts back together; kind 2 is the first fragment with a
// reply block (reply.go) in the payload's last ReplyBlockSize bytes,
// which every fragment leaves for it. The id is random, so fragments of
// one message are tied together only for the exit, which sees them all
// anyway.
const (
	// MaxFragments is the most packets one message is cut into.
	MaxFragments = 8
	// FragmentData is the most message bytes one packet carries.
	FragmentData = PayloadSize - fragHeader - ReplyBlockSize
	// MaxMessage is the longest message: a sealed DM with a 16 KiB body
	// is about 18,100 bytes as an envelope (6 fragments).
	MaxMessage = MaxFragments * FragmentData

	fragKind      = 1
	fragKindReply = 2
	fragKindCover = 3
	fragHeader    = 1 + 16 + 1 + 1 + 2
)

// ErrFragment is a payload that is not a valid fragment.
var ErrFragment = errors.New("onion payload is not a valid fragment")

// Fragments cuts msg (1 to MaxMessage bytes) into the payloads of the
// packets that carry it; reply, if not nil, goes with the first.
func Fragments(msg []byte, reply *ReplyBlock, rnd io.Reader) ([][]byte, error) {
	if len(msg) == 0 || len(msg) > MaxMessage {
		return nil, fmt.Errorf("%w: message of %d bytes, want 1 to %d", ErrFragment, len(msg), MaxMessage)
	}
	var id [16]byte
	if _, err := io.ReadFull(rnd, id[:]); err != nil {
		return nil, fmt.Errorf("fragment id: %w", err)
	}
	count := (len(msg) + FragmentData - 1) / FragmentData
	out := make([][]byte, 0, count)
	for i := range count {
		part := msg[i*FragmentData : min((i+1)*FragmentData, len(msg))]
		p := make([]byte, fragHeader+len(part), PayloadSize)
		p[0] = fragKind
		if i == 0 && reply != nil {
			p = p[:PayloadSize]
			p[0] = fragKindReply
			copy(p[PayloadSize-ReplyBlockSize:], reply.Marshal())
		}
		copy(p[1:17], id[:])
		p[17], p[18] = byte(i), byte(count)
		binary.BigEndian.PutUint16(p[19:21], uint16(len(part)))
		copy(p[fragHeader:], part)
		out = append(out, p)
	}
	return out, nil
}

// CoverPayload is the payload of a cover packet: the exit drops it
// unread, and answers on reply, if not nil, as it answers a message it
// stored, so the entry node sees a reply either way. Only the exit can
// tell it from a message's fragment.
func CoverPayload(reply *ReplyBlock) []byte {
	p := make([]byte, PayloadSize)
	p[0] = fragKindCover
	if reply != nil {
		p[1] = 1
		copy(p[PayloadSize-ReplyBlockSize:], reply.Marshal())
	}
	return p
}

// IsCover reports whether an exit's payload is cover.
func IsCover(p []byte) bool { return len(p) > 0 && p[0] == fragKindCover }

// CoverReply is the reply block a cover payload carries, or nil.
func CoverReply(p []byte) *ReplyBlock {
	if len(p) != PayloadSize || !IsCover(p) || p[1] != 1 {
		return nil
	}
	b, err := ParseReplyBlock(p[PayloadSize-ReplyBlockSize:])
	if err != nil {
		return nil
	}
	return b
}

// fragment is one decoded fragment; data aliases the payload.
type fragment struct {
	id           [16]byte
	index, count int
	data         []byte
	reply        *ReplyBlock
}

func parseFragment(p []byte) (fragment, error) {
	var f fragment
	if len(p) < fragHeader {
		return f, fmt.Errorf("%w: %d bytes", ErrFragment, len(p))
	}
	if p[0] != fragKind && p[0] != fragKindReply {
		return f, fmt.Errorf("%w: kind %d", ErrFragment, p[0])
	}
	copy(f.id[:], p[1:17])
	f.index, f.count = int(p[17]), int(p[18])
	n := int(binary.BigEndian.Uint16(p[19:21]))
	switch {
	case f.count < 1 || f.count > MaxFragments:
		return f, fmt.Errorf("%w: %d fragments, at most %d", ErrFragment, f.count, MaxFragments)
	case f.index >= f.count:
		return f, fmt.Errorf("%w: fragment %d of %d", ErrFragment, f.index, f.count)
	case n > len(p)-fragHeader || n > FragmentData:
		return f, fmt.Errorf("%w: length %d past the payload", ErrFragment, n)
	case n == 0:
		return f, fmt.Errorf("%w: empty fragment", ErrFragment)
	case f.index < f.count-1 && n != FragmentData:
		return f, fmt.Errorf("%w: fragment %d of %d holds %d bytes, want %d", ErrFragment, f.index, f.count, n, FragmentData)
	}
	f.data = p[fragHeader : fragHeader+n]
	if p[0] == fragKindReply {
		if f.index != 0 || len(p) != PayloadSize {
			return f, fmt.Errorf("%w: a reply block in fragment %d of %d", ErrFragment, f.index, f.count)
		}
		r, err := ParseReplyBlock(p[PayloadSize-ReplyBlockSize:])
		if err != nil {
			return f, err
		}
		f.reply = r
	}
	return f, nil
}

// ReassemblyOptions bound a Reassembler. Zero values take the defaults.
type ReassemblyOptions struct {
	// PerSource is how many incomplete messages one predecessor relay may
	// have pending; past it, its oldest is dropped. Default 8.
	PerSource int
	// MaxBytes bounds the bytes held in all incomplete messages, and
	// MaxPending their number; past either the oldest of all is dropped.
	// Defaults 1 MiB and 256.
	MaxBytes   int
	MaxPending int
	// Expire drops an incomplete message this long after its first
	// fragment came. Default 2 minutes.
	Expire time.Duration
	// Now is the clock (tests inject one); nil: time.Now.
	Now func() time.Time
}

func (o ReassemblyOptions) withDefaults() ReassemblyOptions {
	if o.PerSource <= 0 {
		o.PerSource = 8
	}
	if o.MaxBytes <= 0 {
		o.MaxBytes = 1 << 20
	}
	if o.MaxPending <= 0 {
		o.MaxPending = 256
	}
	if o.Expire <= 0 {
		o.Expire = 2 * time.Minute
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return o
}

// Reassembler puts fragmented messages back together at the exit,
// within bounds: per predecessor relay, in bytes, and in time. It is safe
// for concurrent use.
type Reassembler struct {
	o       ReassemblyOptions
	mu      sync.Mutex
	pending map[pendingKey]*partial
	bytes   int
	dropped int64
}

// pendingKey names one message: ids are chosen by senders, so the
// predecessor is part of the key (one relay cannot add to another's).
type pendingKey struct {
	from string
	id   [16]byte
}

type partial struct {
	reply *ReplyBlock
	first time.Time
	parts [][]byte // by index; nil until it came
	have  int
	bytes int
}

// NewReassembler returns an empty Reassembler.
func NewReassembler(o ReassemblyOptions) *Reassembler {
	return &Reassembler{o: o.withDefaults(), pending: map[pendingKey]*partial{}}
}

// Add takes the payload of one exit packet from the predecessor relay
// from. It returns the whole message once its last fragment came (a
// one-fragment message at once), with the reply block its first fragment
// carried, if any; else nil. A fragment seen before is ignored; one that
// contradicts the message's fragment count is refused.
func (r *Reassembler) Add(from string, payload []byte) ([]byte, *ReplyBlock, error) {
	f, err := parseFragment(payload)
	if err != nil {
		return nil, nil, err
	}
	if f.count == 1 {
		return append([]byte(nil), f.data...), f.reply, nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	now := r.o.Now()
	r.expire(now)
	k := pendingKey{from: from, id: f.id}
	p := r.pending[k]
	if p == nil {
		r.makeRoom(from, len(f.data))
		p = &partial{first: now, parts: make([][]byte, f.count)}
		r.pending[k] = p
	} else if len(p.parts) != f.count {
		return nil, nil, fmt.Errorf("%w: fragment says %d fragments, the message %d", ErrFragment, f.count, len(p.parts))
	}
	if p.parts[f.index] != nil {
		return nil, nil, nil
	}
	if f.reply != nil {
		p.reply = f.reply
	}
	p.parts[f.index] = append([]byte(nil), f.data...)
	p.have++
	p.bytes += len(f.data)
	r.bytes += len(f.data)
	if p.have < len(p.parts) {
		for r.bytes > r.o.MaxBytes && len(r.pending) > 1 {
			r.dropOldest("")
		}
		return nil, nil, nil
	}
	delete(r.pending, k)
	r.bytes -= p.bytes
	msg := make([]byte, 0, p.bytes)
	for _, part := range p.parts {
		msg = append(msg, part...)
	}
	return msg, p.reply, nil
}

// makeRoom drops what a new message from from would put over the bounds.
func (r *Reassembler) makeRoom(from string, size int) {
	n := 0
	for k := range r.pending {
		if k.from == from {
			n++
		}
	}
	for ; n >= r.o.PerSource; n-- {
		r.dropOldest(from)
	}
	for len(r.pending) > 0 && (r.bytes+size > r.o.MaxBytes || len(r.pending) >= r.o.MaxPending) {
		r.dropOldest("")
	}
}

// dropOldest drops the oldest incomplete message, of from alone when
// from is set.
func (r *Reassembler) dropOldest(from string) {
	var oldest pendingKey
	var at *partial
	for k, p := range r.pending {
		if (from == "" || k.from == from) && (at == nil || p.first.Before(at.first)) {
			oldest, at = k, p
		}
	}
	if at != nil {
		r.drop(oldest, at)
	}
}

func (r *Reassembler) drop(k pendingKey, p *partial) {
	delete(r.pending, k)
	r.bytes -= p.bytes
	r.dropped++
}

func (r *Reassembler) expire(now time.Time) {
	for k, p := range r.pending {
		if now.Sub(p.first) >= r.o.Expire {
			r.drop(k, p)
		}
	}
}

// ReassemblyStats is what a Reassembler holds and has given up on.
type ReassemblyStats struct {
	Pending int   // incomplete messages held
	Bytes   int   // their bytes
	Dropped int64 // incomplete messages dropped: expired or over a bound
}

// Stats returns the counts now (expired messages are dropped first).
func (r *Reassembler) Stats() ReassemblyStats {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.expire(r.o.Now())
	return ReassemblyStats{Pending: len(r.pending), Bytes: r.bytes, Dropped: r.dropped}
}
