package link

import (
	"context"
	"errors"
	"fmt"

	"capnproto.org/go/capnp/v3"

	"github.com/quicproquo/qpq/schemas"
)

// The raise notice (schemas MeshPeer.raise): a node that now holds a
// broadcast with more hops left than before tells the neighbours that
// hold it with fewer, instead of sending the message again.

const (
	// MaxRaises bounds the entries of one raise call (the schema's
	// comment states it; senders batch far fewer).
	MaxRaises = 1024
	// RaiseIDLen is the length of an envelope id in a raise.
	RaiseIDLen = 32
)

// HopRaise is one raise entry: the receiver may now hold the broadcast
// ID with hop limit HopLimit.
type HopRaise struct {
	ID       [RaiseIDLen]byte
	HopLimit uint8
}

// ErrBadRaise is returned for a raise list that is too long or holds an
// id of the wrong length.
var ErrBadRaise = errors.New("malformed raise")

// ReadRaises decodes and checks a received raise list.
func ReadRaises(list schemas.HopRaise_List) ([]HopRaise, error) {
	if list.Len() > MaxRaises {
		return nil, fmt.Errorf("%w: %d entries, at most %d", ErrBadRaise, list.Len(), MaxRaises)
	}
	out := make([]HopRaise, list.Len())
	for i := range out {
		r := list.At(i)
		id, err := r.Id()
		if err != nil {
			return nil, fmt.Errorf("%w: entry %d: %v", ErrBadRaise, i, err)
		}
		if len(id) != RaiseIDLen {
			return nil, fmt.Errorf("%w: entry %d: id is %d bytes, want %d", ErrBadRaise, i, len(id), RaiseIDLen)
		}
		out[i] = HopRaise{ID: [RaiseIDLen]byte(id), HopLimit: r.HopLimit()}
	}
	return out, nil
}

// WriteRaises fills a raise list made by alloc.
func WriteRaises(raises []HopRaise, alloc func(int32) (schemas.HopRaise_List, error)) error {
	if len(raises) > MaxRaises {
		return fmt.Errorf("%w: %d entries, at most %d", ErrBadRaise, len(raises), MaxRaises)
	}
	list, err := alloc(int32(len(raises)))
	if err != nil {
		return err
	}
	for i, r := range raises {
		e := list.At(i)
		if err := e.SetId(r.ID[:]); err != nil {
			return err
		}
		e.SetHopLimit(r.HopLimit)
	}
	return nil
}

// Raise sends a raise notice to the peer. A peer that does not serve
// raise (an older node) gives an error wrapping ErrNotServed.
func (l *Link) Raise(ctx context.Context, raises []HopRaise) error {
	return CallRaise(ctx, l.remote, raises)
}

// CallRaise calls raise on a MeshPeer capability; Link.Raise uses it,
// and tests call it on a local server.
func CallRaise(ctx context.Context, peer schemas.MeshPeer, raises []HopRaise) error {
	fut, release := peer.Raise(ctx, func(p schemas.MeshPeer_raise_Params) error {
		return WriteRaises(raises, p.NewRaises)
	})
	defer release()
	_, err := fut.Struct()
	if capnp.IsUnimplemented(err) {
		return fmt.Errorf("raise: %w: %v", ErrNotServed, err)
	}
	return err
}
