package onion

import (
	"bytes"
	"errors"
	"fmt"
	"io"

	"github.com/quicproquo/qpq/mesh/identity"
)

// A reply block lets the exit answer the sender (that it injected the
// message) back along a route the sender chose, learning neither that
// route nor who the sender is. It is the complete header of a packet for
// the return route, built by the sender, whose last hop is the sender's
// entry node, told to Deliver, with the reply id its client waits for in
// the hop's data (only that node reads it). The reply's payload is the
// keystream of a seed, so the sender computed every hop's MAC over it in
// advance and the exit carries 32 bytes instead of a payload. On the wire
// a reply is a packet like any other, of the same size.

// ReplyBlockSize is a reply block's size: the first relay of the return
// route (32), the header (549) and the payload's seed (32).
const ReplyBlockSize = 32 + headerSize + 32

// ReplyIDSize is the length of a reply id.
const ReplyIDSize = 16

// ErrReplyBlock is a reply block that cannot be used.
var ErrReplyBlock = errors.New("onion reply block is not valid")

// ReplyBlock is what the exit needs to send one reply.
type ReplyBlock struct {
	First  identity.Fingerprint
	Header [headerSize]byte
	Seed   [32]byte
}

func replyPayload(seed *[32]byte) []byte {
	p := make([]byte, PayloadSize)
	stream(seed, p)
	return p
}

// NewReply builds a reply block for route, whose last hop is the sender's
// entry node: it will deliver the reply to the client waiting for id.
func NewReply(route []Hop, id [ReplyIDSize]byte, rnd io.Reader) (*ReplyBlock, error) {
	if len(route) == 0 {
		return nil, fmt.Errorf("%w: empty reply route", ErrRoute)
	}
	b := &ReplyBlock{First: route[0].Node}
	if _, err := io.ReadFull(rnd, b.Seed[:]); err != nil {
		return nil, fmt.Errorf("reply seed: %w", err)
	}
	route = append([]Hop(nil), route...)
	copy(route[len(route)-1].Data[:], id[:])
	pkt, err := build(route, Deliver, func(keys []hopKeys) []byte {
		// What the last hop reads: the seed's stream with every layer
		// taken off, so that with them all put on it is the stream.
		p := replyPayload(&b.Seed)
		for i := range keys {
			stream(&keys[i].pi, p)
		}
		return p
	}, rnd)
	if err != nil {
		return nil, err
	}
	if !bytes.Equal(pkt[headerSize:], replyPayload(&b.Seed)) {
		return nil, errors.New("reply block: payload does not match its seed") // cannot happen
	}
	copy(b.Header[:], pkt[:headerSize])
	return b, nil
}

// Packet is the reply the exit sends to First.
func (b *ReplyBlock) Packet() []byte {
	pkt := make([]byte, Size)
	copy(pkt, b.Header[:])
	copy(pkt[headerSize:], replyPayload(&b.Seed))
	return pkt
}

// Marshal is the block's ReplyBlockSize bytes.
func (b *ReplyBlock) Marshal() []byte {
	out := make([]byte, 0, ReplyBlockSize)
	out = append(out, b.First[:]...)
	out = append(out, b.Header[:]...)
	return append(out, b.Seed[:]...)
}

// ParseReplyBlock reads a marshalled reply block.
func ParseReplyBlock(p []byte) (*ReplyBlock, error) {
	if len(p) != ReplyBlockSize {
		return nil, fmt.Errorf("%w: %d bytes, want %d", ErrReplyBlock, len(p), ReplyBlockSize)
	}
	b := &ReplyBlock{}
	copy(b.First[:], p[:32])
	copy(b.Header[:], p[32:32+headerSize])
	copy(b.Seed[:], p[32+headerSize:])
	if b.Header[0] != Version {
		return nil, fmt.Errorf("%w: header version %d", ErrReplyBlock, b.Header[0])
	}
	return b, nil
}
