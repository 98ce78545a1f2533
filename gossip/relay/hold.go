package relay

// Held DMs: stored here but not offered to neighbours, because they travel
// by mailbox placement instead (node/daemon/placement.go): the node that
// placed a DM holds its own copy until the recipient's receipt deletes it
// or its fallback floods it, and a mailbox node holds what was placed on
// it until the recipient's node pulls it. Holding is a promise to flood
// later, never a reason to lose a DM, so every way out of it floods:
//
//   - Release (the placing node's fallback, or a placement that failed);
//   - the same DM arriving from a neighbour without the hold (someone's
//     fallback flood passing through: it must go on past this node);
//   - the set full (maxHeld): a new DM is flooded at once instead;
//   - a restart: the set is memory only, so anti-entropy offers every
//     stored DM again, as it did before placement.

import (
	"sync"

	"github.com/quicproquo/qpq/gossip"
	"github.com/quicproquo/qpq/mesh/identity"
	"github.com/quicproquo/qpq/schemas"
)

// maxHeld bounds the held set (about 50 bytes per entry in the map).
const maxHeld = 1 << 16

// holdSet is the engine's held ids.
type holdSet struct {
	mu  sync.Mutex
	ids map[gossip.ID]struct{}
}

func (h *holdSet) has(id gossip.ID) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	_, ok := h.ids[id]
	return ok
}

// add holds id unless the set is full.
func (h *holdSet) add(id gossip.ID) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.ids == nil {
		h.ids = map[gossip.ID]struct{}{}
	}
	if len(h.ids) >= maxHeld {
		return false
	}
	h.ids[id] = struct{}{}
	return true
}

// remove reports whether id was held.
func (h *holdSet) remove(id gossip.ID) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	_, ok := h.ids[id]
	delete(h.ids, id)
	return ok
}

func (h *holdSet) snapshot() []gossip.ID {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make([]gossip.ID, 0, len(h.ids))
	for id := range h.ids {
		out = append(out, id)
	}
	return out
}

// holdable says whether src asks for env to be held: only DMs are.
func holdable(env gossip.Envelope, src Source) bool {
	return src.Hold && env.Kind == schemas.Envelope_Kind_dm
}

// Held reports whether the DM id is stored here and held back from
// neighbours.
func (e *Engine) Held(id gossip.ID) bool { return e.holds.has(id) }

// HeldCount is how many DMs are held now (status).
func (e *Engine) HeldCount() int {
	e.holds.mu.Lock()
	defer e.holds.mu.Unlock()
	return len(e.holds.ids)
}

// Release stops holding id and, if it is still stored, offers it to every
// neighbour (flooding, as every DM travelled before placement). It
// reports whether id was held.
func (e *Engine) Release(id gossip.ID) bool {
	if !e.holds.remove(id) {
		return false
	}
	if e.stored(id) {
		e.fanOut(id, identity.Fingerprint{})
	}
	return true
}

// AcceptPulled stores DMs this node fetched from a mailbox node (a
// pull it asked for, so no neighbour's rate budget is spent), held: the
// recipient's client reads them here, and they are not flooded from here.
// Envelopes other than DMs are refused.
func (e *Engine) AcceptPulled(from Source, envs []gossip.Envelope) (added int, err error) {
	from.Hold = true
	dms := make([]gossip.Envelope, 0, len(envs))
	for _, env := range envs {
		if env.Kind == schemas.Envelope_Kind_dm {
			dms = append(dms, env)
		}
	}
	out, err := e.admitBatch(dms, from)
	if err != nil {
		return 0, err
	}
	for i, o := range out {
		if o.err != nil {
			e.log.Debug("refused pulled envelope", "id", dms[i].ID, "err", o.err)
		} else if o.added {
			added++
		}
	}
	return added, nil
}

// pruneHeld forgets held ids no longer stored (deleted by a receipt,
// expired).
func (e *Engine) pruneHeld() int {
	n := 0
	for _, id := range e.holds.snapshot() {
		if !e.stored(id) && e.holds.remove(id) {
			n++
		}
	}
	return n
}

// spread offers a newly stored env to every neighbour but its source,
// unless src holds it (and the set has room).
func (e *Engine) spread(env gossip.Envelope, src Source) {
	if holdable(env, src) && e.holds.add(env.ID) {
		return
	}
	e.fanOut(env.ID, src.Peer)
}

// passThrough handles a DM that arrived again: a copy pushed without the
// hold is a flood passing through, so this node stops holding it and
// floods it on.
func (e *Engine) passThrough(env gossip.Envelope, src Source) {
	if !src.Hold && env.Kind == schemas.Envelope_Kind_dm && e.holds.remove(env.ID) {
		e.fanOut(env.ID, src.Peer)
	}
}

// stored reports whether id is stored (Has also counts tombstones).
func (e *Engine) stored(id gossip.ID) bool {
	_, ok, err := e.o.Store.Get(id)
	return ok || err != nil // a store error keeps it held: nothing is lost
}

// AcceptPlaced stores the DMs a placing node hands this one as a mailbox
// node (wire's place), held: they wait for the recipient's node to pull
// them instead of being flooded. A registered neighbour's rate budget is
// spent as for a push; a push over it is refused whole with
// ErrRateLimited once the part within it is stored (placement is one DM
// at a time: the placer takes a refusal as a failed placement). Envelopes
// other than DMs are refused.
func (e *Engine) AcceptPlaced(from identity.Fingerprint, envs []gossip.Envelope) (added int, err error) {
	dms := make([]gossip.Envelope, 0, len(envs))
	for _, env := range envs {
		if env.Kind == schemas.Envelope_Kind_dm {
			dms = append(dms, env)
		}
	}
	n, _ := e.takeUpTo(from, len(dms))
	out, err := e.admitBatch(dms[:n], Source{Peer: from, Hold: true})
	if err != nil {
		return 0, err
	}
	for i, o := range out {
		if o.err != nil {
			e.log.Debug("refused placed envelope", "peer", from, "id", dms[i].ID, "err", o.err)
		} else if o.added {
			added++
		}
	}
	if n < len(dms) {
		return added, ErrRateLimited
	}
	return added, nil
}
