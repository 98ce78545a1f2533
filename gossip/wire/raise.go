package wire

import (
	"errors"
	"fmt"

	"github.com/quicproquo/qpq/gossip"
	"github.com/quicproquo/qpq/gossip/relay"
	"github.com/quicproquo/qpq/schemas"
)

// The raise notice (schemas MeshPeer.raise): a node that now holds a
// broadcast with more hops left than before tells the neighbours that
// hold it with fewer, instead of sending the message again.

// ErrBadRaise is returned for a raise list that is too long or holds an
// id of the wrong length.
var ErrBadRaise = errors.New("malformed raise")

// ReadRaises decodes and checks a received raise list.
func ReadRaises(list schemas.HopRaise_List) ([]relay.HopRaise, error) {
	if list.Len() > relay.MaxRaises {
		return nil, fmt.Errorf("%w: %d entries, at most %d", ErrBadRaise, list.Len(), relay.MaxRaises)
	}
	out := make([]relay.HopRaise, list.Len())
	for i := range out {
		r := list.At(i)
		id, err := r.Id()
		if err != nil {
			return nil, fmt.Errorf("%w: entry %d: %v", ErrBadRaise, i, err)
		}
		if len(id) != gossip.IDLen {
			return nil, fmt.Errorf("%w: entry %d: id is %d bytes, want %d", ErrBadRaise, i, len(id), gossip.IDLen)
		}
		out[i] = relay.HopRaise{ID: gossip.ID(id), HopLimit: r.HopLimit()}
	}
	return out, nil
}

// WriteRaises fills a raise list made by alloc.
func WriteRaises(raises []relay.HopRaise, alloc func(int32) (schemas.HopRaise_List, error)) error {
	if len(raises) > relay.MaxRaises {
		return fmt.Errorf("%w: %d entries, at most %d", ErrBadRaise, len(raises), relay.MaxRaises)
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
