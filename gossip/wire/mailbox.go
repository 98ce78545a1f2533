package wire

// place and pull: the calls of mailbox placement (node/daemon/placement.go).

import (
	"context"
	"errors"
	"fmt"

	"capnproto.org/go/capnp/v3"

	"github.com/quicproquo/qpq/gossip"
	"github.com/quicproquo/qpq/gossip/relay"
	"github.com/quicproquo/qpq/mesh/identity"
	"github.com/quicproquo/qpq/schemas"
)

// Limits of one pull.
const (
	// MaxPull bounds the envelopes of one pull answer.
	MaxPull = 64
	// MaxPullBytes bounds one pull answer's payloads (but always lets one
	// envelope through), well under the RPC message bound.
	MaxPullBytes = 96 << 10
)

// ErrMailboxUnsupported wraps the answer of a node that does not serve
// place or pull (placement off, or older than placement).
var ErrMailboxUnsupported = errors.New("node does not hold mailboxes")

// MailboxVersion is the first link protocol version with place and pull.
// Over a link that agreed on less, neither is called: the other side is
// an older node, and what it cannot hold floods instead.
const MailboxVersion uint16 = 3

// PullRequest is one pull's arguments, checked.
type PullRequest struct {
	Bucket uint32
	Bits   uint8
	After  *gossip.ID // nil: from the first
	Limit  int        // 1..MaxPull
}

// Mailboxes serves a node's placed DMs: Place stores DMs for the
// mailboxes this node holds, Pull reads them back by bucket.
type Mailboxes interface {
	Place(from identity.Fingerprint, envs []gossip.Envelope) (accepted int, err error)
	// Pull returns DMs in id order after req.After, within req's bounds,
	// and next, the last id returned when more may follow.
	Pull(from identity.Fingerprint, req PullRequest) (envs []gossip.Envelope, next *gossip.ID, err error)
}

// Place stores the DMs a placing node hands us.
func (s *Server) Place(ctx context.Context, call schemas.MeshPeer_place) (err error) {
	if s.o.Mailboxes == nil {
		return s.PeerServer.Place(ctx, call)
	}
	defer s.recover("place", &err)
	list, err := call.Args().Envelopes()
	if err != nil {
		return fmt.Errorf("place: %w", err)
	}
	if list.Len() > relay.MaxPush {
		return fmt.Errorf("place of %d envelopes, at most %d", list.Len(), relay.MaxPush)
	}
	envs := make([]gossip.Envelope, 0, list.Len())
	for i := 0; i < list.Len(); i++ {
		env, err := gossip.FromCapnp(list.At(i))
		if err != nil {
			s.log.Debug("dropped placed envelope", "peer", s.from, "err", err)
			continue
		}
		envs = append(envs, env)
	}
	n, err := s.o.Mailboxes.Place(s.from, envs)
	if err != nil {
		return fmt.Errorf("place: %w", err)
	}
	res, err := call.AllocResults()
	if err != nil {
		return err
	}
	res.SetAccepted(uint32(n))
	return nil
}

// Pull answers a pull from the DMs placed here.
func (s *Server) Pull(ctx context.Context, call schemas.MeshPeer_pull) (err error) {
	if s.o.Mailboxes == nil {
		return s.PeerServer.Pull(ctx, call)
	}
	defer s.recover("pull", &err)
	args := call.Args()
	req := PullRequest{Bucket: args.Bucket(), Bits: args.Bits(), Limit: int(args.Limit())}
	if req.Bits == 0 || req.Bits > 32 || (req.Bits < 32 && req.Bucket >= 1<<req.Bits) {
		return fmt.Errorf("pull: bucket %d does not fit %d bits (1-32)", req.Bucket, req.Bits)
	}
	if req.Limit <= 0 || req.Limit > MaxPull {
		req.Limit = MaxPull
	}
	after, err := args.After()
	if err != nil {
		return fmt.Errorf("pull: %w", err)
	}
	switch len(after) {
	case 0:
	case gossip.IDLen:
		id := gossip.ID(after)
		req.After = &id
	default:
		return fmt.Errorf("pull: after is %d bytes, want 0 or %d", len(after), gossip.IDLen)
	}
	envs, next, err := s.o.Mailboxes.Pull(s.from, req)
	if err != nil {
		return fmt.Errorf("pull: %w", err)
	}
	res, err := call.AllocResults()
	if err != nil {
		return err
	}
	if err := gossip.ToCapnpList(envs, res.NewEnvelopes); err != nil {
		return fmt.Errorf("pull: %w", err)
	}
	if next != nil {
		return res.SetNext(next[:])
	}
	return nil
}

// Place hands DMs to a mailbox node and returns how many it newly stored.
// A node that does not hold mailboxes gives an error wrapping
// ErrMailboxUnsupported.
func (p Peer) Place(ctx context.Context, envs []gossip.Envelope) (int, error) {
	if p.version < MailboxVersion {
		return 0, fmt.Errorf("place: %w: link speaks protocol %d, placement needs %d", ErrMailboxUnsupported, p.version, MailboxVersion)
	}
	if len(envs) > relay.MaxPush {
		return 0, fmt.Errorf("place of %d envelopes, at most %d", len(envs), relay.MaxPush)
	}
	fut, release := p.forMessages(envelopesSize(envs)).Place(ctx, func(ps schemas.MeshPeer_place_Params) error {
		return gossip.ToCapnpList(envs, ps.NewEnvelopes)
	})
	defer release()
	res, err := fut.Struct()
	if capnp.IsUnimplemented(err) {
		return 0, fmt.Errorf("place: %w: %v", ErrMailboxUnsupported, err)
	}
	if err != nil {
		return 0, err
	}
	return int(res.Accepted()), nil
}

// Pull reads one page of a bucket from a mailbox node: the envelopes that
// decoded (a bad one is skipped), and the cursor for the next page (nil
// when done). A node that does not hold mailboxes gives an error
// wrapping ErrMailboxUnsupported.
func (p Peer) Pull(ctx context.Context, req PullRequest) ([]gossip.Envelope, *gossip.ID, error) {
	if p.version < MailboxVersion {
		return nil, nil, fmt.Errorf("pull: %w: link speaks protocol %d, placement needs %d", ErrMailboxUnsupported, p.version, MailboxVersion)
	}
	fut, release := p.remote.Pull(ctx, func(ps schemas.MeshPeer_pull_Params) error {
		ps.SetBucket(req.Bucket)
		ps.SetBits(req.Bits)
		ps.SetLimit(uint32(max(req.Limit, 0)))
		if req.After != nil {
			return ps.SetAfter(req.After[:])
		}
		return nil
	})
	defer release()
	res, err := fut.Struct()
	if capnp.IsUnimplemented(err) {
		return nil, nil, fmt.Errorf("pull: %w: %v", ErrMailboxUnsupported, err)
	}
	if err != nil {
		return nil, nil, err
	}
	list, err := res.Envelopes()
	if err != nil {
		return nil, nil, fmt.Errorf("pull: %w", err)
	}
	if list.Len() > MaxPull {
		return nil, nil, fmt.Errorf("pull: answer of %d envelopes, at most %d", list.Len(), MaxPull)
	}
	envs := make([]gossip.Envelope, 0, list.Len())
	for i := 0; i < list.Len(); i++ {
		env, err := gossip.FromCapnp(list.At(i))
		if err != nil {
			continue
		}
		envs = append(envs, env) // FromCapnp copies: it outlives the answer
	}
	next, err := res.Next()
	if err != nil {
		return nil, nil, fmt.Errorf("pull: %w", err)
	}
	switch len(next) {
	case 0:
		return envs, nil, nil
	case gossip.IDLen:
		id := gossip.ID(next)
		return envs, &id, nil
	default:
		return nil, nil, fmt.Errorf("pull: next is %d bytes, want 0 or %d", len(next), gossip.IDLen)
	}
}
