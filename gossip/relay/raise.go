package relay

import (
	"github.com/quicproquo/qpq/gossip"
	"github.com/quicproquo/qpq/mesh/identity"
	"github.com/quicproquo/qpq/schemas"
)

// HopRaise says the receiver may hold the broadcast ID with HopLimit
// (schemas.HopRaise in Go form).
type HopRaise struct {
	ID       gossip.ID
	HopLimit uint8
}

// maxBoost bounds the broadcasts whose hop limit was raised. When it is
// reached, boosts of broadcasts no longer held are dropped first; only if
// that frees nothing is the map cleared (those broadcasts fall back to
// their stored hop limit).
const maxBoost = 1 << 14

// raiseHops handles a broadcast that we may now hold with hop limit hops:
// a copy arrived again with more hops left than the one held (the first
// came along a longer path), or a neighbour sent a raise. When that is
// more than we hold, the better limit is remembered and the id queued for
// every neighbour but from: sendLoop pushes the envelope to those that
// lack it (skipped before for lack of hops) and a raise to those that hold
// it with fewer hops than it can now give them, so a short path is never
// starved by a long one; no neighbour gets the envelope twice. Limits
// only rise, to at most MaxBroadcastHops, so the raises end.
//
// With pending set (the seen-set knows the id) the limit is remembered
// even when the store does not hold the id yet: a concurrent Accept of
// the first copy may be about to store it, and its fan-out then reads
// the raised limit.
func (e *Engine) raiseHops(id gossip.ID, hops uint8, from identity.Fingerprint, pending bool) {
	hops = min(hops, e.o.MaxBroadcastHops)
	held, ok, err := e.o.Store.Get(id)
	if err != nil || (!ok && !pending) {
		return
	}
	e.boostMu.Lock()
	cur := e.boost[id]
	if ok {
		cur = max(cur, held.HopLimit)
	}
	if hops <= cur {
		e.boostMu.Unlock()
		return
	}
	if len(e.boost) >= maxBoost {
		// Rare: PruneBoosts runs after every purge.
		clear(e.boost)
	}
	e.boost[id] = hops
	e.boostMu.Unlock()
	e.fanOut(id, from)
}

// PruneBoosts forgets raised hop limits of broadcasts no longer held
// (expired or deleted, or never stored); the node calls it after each
// purge. The store is read without holding the engine's lock.
func (e *Engine) PruneBoosts() (dropped int) {
	e.boostMu.Lock()
	ids := make([]gossip.ID, 0, len(e.boost))
	for id := range e.boost {
		ids = append(ids, id)
	}
	e.boostMu.Unlock()
	var gone []gossip.ID
	for _, id := range ids {
		// Get, not Has: Has also answers for tombstones.
		if _, ok, err := e.o.Store.Get(id); err == nil && !ok {
			gone = append(gone, id)
		}
	}
	e.boostMu.Lock()
	for _, id := range gone {
		delete(e.boost, id)
	}
	e.boostMu.Unlock()
	return len(gone)
}

// HandleRaise applies a raise notice from neighbour fp: each entry costs
// one token of its rate budget (ErrRateLimited ends the call); entries
// for ids not held here, or not broadcasts, are ignored.
func (e *Engine) HandleRaise(fp identity.Fingerprint, raises []HopRaise) error {
	for _, r := range raises {
		if err := e.take(fp); err != nil {
			return err
		}
		env, ok, err := e.o.Store.Get(r.ID)
		if err != nil {
			return err
		}
		// Not stored yet but seen: the first copy is being stored right
		// now (the seen-set holds broadcasts only).
		if (ok && env.Kind != schemas.Envelope_Kind_broadcast) || (!ok && !e.seen.Seen(r.ID)) {
			continue
		}
		hops := min(r.HopLimit, e.o.MaxBroadcastHops)
		e.markKnown(fp, r.ID, plusOne(hops))
		e.raiseHops(r.ID, hops, fp, true)
	}
	return nil
}
