// Package cell carries fixed-size cells between two linked nodes, one
// cell per QUIC DATAGRAM frame, so that an observer of the encrypted
// packets sees one size whatever a cell holds: a piece of an onion
// packet or cover (a decoy). A Sender sends its link's cells on a
// Poisson clock when decoys are on, a real cell taking the place of the
// next cover cell; a Receiver drops cover, reassembles onion packets and
// limits what a neighbour may send.
//
// The arithmetic: a QUIC packet starts at 1,280 bytes on the wire
// (quic-go's initial size; path MTU discovery may raise it), of which a
// DATAGRAM frame carries at most about 1,230 after the short header, the
// frame header and the AEAD tag. A cell is Size bytes: big enough that
// no STREAM frame (at least 128 bytes in quic-go) fits beside it, so a
// cell's packet holds the cell and at most a small ACK, and small enough
// to fit the smallest packet. Inside: kind (1), packet id (8), index (1),
// then Chunk bytes of the onion packet (4,096 bytes: 4 chunks), the rest
// zero. A stream cell (Stream) holds kind (1), sequence (4), ack (4),
// selective ack (4), length (2) and up to StreamData bytes.
package cell

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/quicproquo/qpq/mesh/onion"
)

const (
	// Size is a cell's length: every datagram a link sends for cells
	// carries exactly this many bytes.
	Size = 1150
	// PerPacket is how many cells carry one onion packet (the onion
	// package sizes its packets in these cells).
	PerPacket = onion.CellsPerPacket
	// Chunk is the onion bytes in one cell.
	Chunk      = onion.CellSize
	headerSize = 1 + 8 + 1
)

// Kind says what a cell holds; only the two ends of a link read it.
type Kind byte

const (
	// Cover is a decoy: the receiver drops it unread.
	Cover Kind = 0
	// Onion is one chunk of an onion packet.
	Onion Kind = 1
	// StreamKind is a piece of the link's reliable cell stream (Stream),
	// its acknowledgements, or both.
	StreamKind Kind = 2
)

// ErrCell is a datagram that is not a cell.
var ErrCell = errors.New("not a link cell")

// CoverCell is a decoy cell (all zero after its kind; QUIC encrypts it
// like any other).
func CoverCell() []byte { return make([]byte, Size) }

// OnionCells cuts an onion packet into its PerPacket cells under id,
// which the receiver reassembles them by.
func OnionCells(id uint64, pkt []byte) ([][]byte, error) {
	if len(pkt) != onion.Size {
		return nil, fmt.Errorf("%w: onion packet of %d bytes, want %d", ErrCell, len(pkt), onion.Size)
	}
	out := make([][]byte, PerPacket)
	for i := range out {
		c := make([]byte, Size)
		c[0] = byte(Onion)
		binary.BigEndian.PutUint64(c[1:9], id)
		c[9] = byte(i)
		copy(c[headerSize:], pkt[i*Chunk:(i+1)*Chunk])
		out[i] = c
	}
	return out, nil
}

// Parsed is a received cell.
type Parsed struct {
	Kind  Kind
	ID    uint64
	Index int
	Data  []byte // Chunk bytes of an onion cell, or a stream cell's data; points into the cell

	// A stream cell's sequence number (of Data, when it has any), the
	// next sequence number its sender expects, and which of the 32
	// after that it holds already.
	Seq, Ack, Sack uint32
}

// Parse reads a cell; a datagram of another size or kind is refused.
func Parse(b []byte) (Parsed, error) {
	if len(b) != Size {
		return Parsed{}, fmt.Errorf("%w: %d bytes, want %d", ErrCell, len(b), Size)
	}
	switch Kind(b[0]) {
	case Cover:
		return Parsed{Kind: Cover}, nil
	case Onion:
		i := int(b[9])
		if i >= PerPacket {
			return Parsed{}, fmt.Errorf("%w: onion chunk %d of %d", ErrCell, i, PerPacket)
		}
		return Parsed{Kind: Onion, ID: binary.BigEndian.Uint64(b[1:9]), Index: i, Data: b[headerSize : headerSize+Chunk]}, nil
	case StreamKind:
		n := int(binary.BigEndian.Uint16(b[13:15]))
		if n > StreamData {
			return Parsed{}, fmt.Errorf("%w: stream cell says %d bytes, at most %d fit", ErrCell, n, StreamData)
		}
		return Parsed{Kind: StreamKind, Seq: binary.BigEndian.Uint32(b[1:5]), Ack: binary.BigEndian.Uint32(b[5:9]),
			Sack: binary.BigEndian.Uint32(b[9:13]), Data: b[streamHeader : streamHeader+n]}, nil
	default:
		return Parsed{}, fmt.Errorf("%w: kind %d", ErrCell, b[0])
	}
}

const (
	// maxPartial bounds the onion packets a link has half received.
	maxPartial = 16
	// partialLife is how long a half-received packet waits for the rest.
	partialLife = 30 * time.Second
)

type partial struct {
	pkt  []byte
	have [PerPacket]bool
	n    int
	at   time.Time
}

// assembler puts one link's onion packets back together, in bounded
// memory: maxPartial sets at most (the oldest dropped first), each for
// partialLife at most.
type assembler struct {
	sets map[uint64]*partial
}

func newAssembler() *assembler { return &assembler{sets: map[uint64]*partial{}} }

// add files a chunk and returns the packet once all its chunks are in;
// dropped counts the sets given up.
func (a *assembler) add(p Parsed, now time.Time) (pkt []byte, dropped int) {
	for id, s := range a.sets {
		if now.Sub(s.at) > partialLife {
			delete(a.sets, id)
			dropped++
		}
	}
	s := a.sets[p.ID]
	if s == nil {
		if len(a.sets) >= maxPartial {
			var oldest uint64
			var at time.Time
			for id, o := range a.sets {
				if at.IsZero() || o.at.Before(at) {
					oldest, at = id, o.at
				}
			}
			delete(a.sets, oldest)
			dropped++
		}
		s = &partial{pkt: make([]byte, onion.Size), at: now}
		a.sets[p.ID] = s
	}
	if s.have[p.Index] {
		return nil, dropped
	}
	s.have[p.Index] = true
	s.n++
	copy(s.pkt[p.Index*Chunk:], p.Data)
	if s.n < PerPacket {
		return nil, dropped
	}
	delete(a.sets, p.ID)
	return s.pkt, dropped
}
