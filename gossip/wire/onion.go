package wire

import (
	"context"
	"errors"
	"fmt"

	"capnproto.org/go/capnp/v3"

	"github.com/quicproquo/qpq/mesh/identity"
	"github.com/quicproquo/qpq/mesh/onion"
	"github.com/quicproquo/qpq/schemas"
)

// OnionVersion is the first link protocol version with onion. Over a
// link that agreed on less it is not called: the other side is an older
// node, which never relays onion packets.
const OnionVersion uint16 = 4

// ErrOnionUnsupported wraps the answer of a node that does not take onion
// packets (older than onion relaying).
var ErrOnionUnsupported = errors.New("node does not relay onion packets")

// Onions takes the onion packets neighbours and dialling nodes hand this
// node. Onion must not block for long (it runs on the RPC goroutine) and
// owns packet: it is a copy.
type Onions interface {
	Onion(from identity.Fingerprint, packet []byte) error
}

// Onion hands the packet to the node's onion relay. The answer says only
// that it arrived: a relay that could not peel it (altered, replayed, under
// a retired key) says nothing of why, so a sender probing with packets
// learns nothing from the answers.
func (s *Server) Onion(ctx context.Context, call schemas.MeshPeer_onion) (err error) {
	if s.o.Onions == nil {
		return s.PeerServer.Onion(ctx, call)
	}
	defer s.recover("onion", &err)
	pkt, err := call.Args().Packet()
	if err != nil {
		return fmt.Errorf("onion: %w", err)
	}
	if len(pkt) != onion.Size {
		return fmt.Errorf("onion: packet of %d bytes, want %d", len(pkt), onion.Size)
	}
	return s.o.Onions.Onion(s.from, append([]byte(nil), pkt...))
}

// Onion hands the peer an onion packet whose next relay it is.
func (p Peer) Onion(ctx context.Context, pkt []byte) error {
	if p.version < OnionVersion {
		return fmt.Errorf("onion: %w: link speaks protocol %d, onion needs %d", ErrOnionUnsupported, p.version, OnionVersion)
	}
	if len(pkt) != onion.Size {
		// Every onion packet on a link has the one size, or its length
		// would say something of what it carries.
		return fmt.Errorf("onion: packet of %d bytes, want %d", len(pkt), onion.Size)
	}
	fut, release := p.remote.Onion(ctx, func(ps schemas.MeshPeer_onion_Params) error {
		return ps.SetPacket(pkt)
	})
	defer release()
	_, err := fut.Struct()
	if capnp.IsUnimplemented(err) {
		return fmt.Errorf("onion: %w: %v", ErrOnionUnsupported, err)
	}
	if err != nil {
		return fmt.Errorf("onion: %w", err)
	}
	return nil
}
