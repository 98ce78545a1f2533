// Package wire is the neighbour protocol's one home: the MeshPeer calls
// push, summary and raise that carry store and forward between linked
// nodes. Peer is the client side, the relay engine's relay.Peer over a
// neighbour's MeshPeer capability; Server is the MeshPeer a node offers a
// neighbour, which decodes each call, checks it against the limits in
// gossip/relay and hands it to the engine. Hello and health, which every
// link needs whatever it carries, stay in mesh/link.
package wire

import (
	"context"
	"fmt"
	"time"

	"capnproto.org/go/capnp/v3"

	"github.com/quicproquo/qpq/gossip"
	"github.com/quicproquo/qpq/gossip/relay"
	"github.com/quicproquo/qpq/schemas"
)

// Peer is a neighbour's MeshPeer as the relay engine sees it.
type Peer struct {
	remote  schemas.MeshPeer
	version uint16
	msgs    *Messages
}

// Messages is a second way to the same neighbour for the calls that carry
// messages (push, raise, place): the link's cell stream, whose cells take
// the place of cover so that a capture cannot tell when they move.
// Summaries, pulls and calls too big for it use the link's own stream.
type Messages struct {
	// Remote is the neighbour's MeshPeer on the cell stream (borrowed).
	Remote schemas.MeshPeer
	// Room reports whether a call of about n bytes goes this way now
	// (mesh/cell.Stream.Room); a call that does not fit goes at once on
	// the link's own stream instead.
	Room func(n int) bool
}

// WithMessages returns p sending its message calls by m.
func (p Peer) WithMessages(m Messages) Peer {
	p.msgs = &m
	return p
}

// envelopeOverhead is a generous estimate of an envelope's encoding
// beyond its variable fields.
const envelopeOverhead = 96

// forMessages picks the capability for a message call of about n bytes.
func (p Peer) forMessages(n int) schemas.MeshPeer {
	if p.msgs != nil && p.msgs.Room(n) {
		return p.msgs.Remote
	}
	return p.remote
}

// envelopesSize estimates envs' encoded size.
func envelopesSize(envs []gossip.Envelope) int {
	n := 64
	for _, e := range envs {
		n += envelopeOverhead + len(e.Destination) + len(e.ReceiptTag) + len(e.Payload)
	}
	return n
}

var (
	_ relay.Peer      = Peer{}
	_ relay.Versioned = Peer{}
)

// NewPeer wraps a neighbour's MeshPeer capability (borrowed: the link
// owns and releases it); version is the protocol version the link's
// hello agreed on, which says what the neighbour understands.
func NewPeer(remote schemas.MeshPeer, version uint16) Peer {
	return Peer{remote: remote, version: version}
}

// ProtocolVersion is the version the link agreed on.
func (p Peer) ProtocolVersion() uint16 { return p.version }

// Push sends envelopes and returns the neighbour's answer: how many it
// newly stored, and, from a neighbour that paces us (protocol version 2),
// how many it took and when to send the rest.
func (p Peer) Push(ctx context.Context, envs []gossip.Envelope) (relay.PushResult, error) {
	if len(envs) > relay.MaxPush {
		return relay.PushResult{}, fmt.Errorf("push of %d envelopes, at most %d", len(envs), relay.MaxPush)
	}
	fut, release := p.forMessages(envelopesSize(envs)).Push(ctx, func(ps schemas.MeshPeer_push_Params) error {
		return gossip.ToCapnpList(envs, ps.NewEnvelopes)
	})
	defer release()
	res, err := fut.Struct()
	if err != nil {
		return relay.PushResult{}, err
	}
	out := relay.PushResult{Accepted: int(res.Accepted()), Taken: int(res.Taken()), RetryAfter: time.Duration(res.RetryAfterMs()) * time.Millisecond}
	if out.Taken == 0 && out.RetryAfter == 0 {
		out.Taken = len(envs) // an older neighbour: it handled them all
	}
	out.Taken = min(out.Taken, len(envs))
	return out, nil
}

// Summary offers the neighbour our digest.
func (p Peer) Summary(ctx context.Context, s relay.Summary) error {
	fut, release := p.remote.Summary(ctx, func(ps schemas.MeshPeer_summary_Params) error {
		sum, err := ps.NewSummary()
		if err != nil {
			return err
		}
		if err := sum.SetFilter(s.Filter); err != nil {
			return err
		}
		if err := sum.SetKey(s.Key); err != nil {
			return err
		}
		sum.SetCount(s.Count)
		return setSummaryRange(sum, s)
	})
	defer release()
	_, err := fut.Struct()
	return err
}

// Raise sends a raise notice. A neighbour that predates raise answers
// unimplemented, which is returned wrapping relay.ErrRaiseUnsupported.
func (p Peer) Raise(ctx context.Context, raises []relay.HopRaise) error {
	fut, release := p.forMessages(64+48*len(raises)).Raise(ctx, func(ps schemas.MeshPeer_raise_Params) error {
		return WriteRaises(raises, ps.NewRaises)
	})
	defer release()
	_, err := fut.Struct()
	if capnp.IsUnimplemented(err) {
		return fmt.Errorf("raise: %w: %v", relay.ErrRaiseUnsupported, err)
	}
	return err
}
