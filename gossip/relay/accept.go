package relay

import (
	"errors"
	"fmt"

	"github.com/quicproquo/qpq/gossip"
	"github.com/quicproquo/qpq/gossip/store"
	"github.com/quicproquo/qpq/mesh/identity"
	"github.com/quicproquo/qpq/schemas"
)

// Source names where an envelope came from, for quotas and for not
// echoing it back. Exactly one of Peer and Client is set.
type Source struct {
	Peer   identity.Fingerprint
	Client string // a per-connection label; never written to disk
	// Hold stores a DM without offering it to neighbours (hold.go).
	Hold bool
}

func (s Source) quotaKey() string {
	if s.Client != "" {
		return "client " + s.Client
	}
	return "link " + s.Peer.String()
}

// Accept checks and stores an envelope and, when it is new, queues it for
// every neighbour except its source. added is false for duplicates.
func (e *Engine) Accept(env gossip.Envelope, src Source) (added bool, err error) {
	if src.Client == "" {
		if err := e.take(src.Peer); err != nil {
			return false, err
		}
	}
	return e.admit(env, src)
}

// AcceptPush handles a neighbour's push: it takes as many envelopes,
// from the first, as the neighbour's rate budget allows, and accepts
// them in one store transaction (one commit, so "accepted" is durable
// when the push is answered); an envelope refused for good counts as
// taken. With flow, the answer says how many were taken and when to send
// the rest; without (a neighbour at protocol version 1, which cannot read
// that answer), a push over the budget is refused with ErrRateLimited
// once the part within it is handled, as version 1 did. An error of the
// store itself fails the push: nothing of it was stored, and the sender
// keeps it.
func (e *Engine) AcceptPush(from identity.Fingerprint, envs []gossip.Envelope, flow bool) (PushResult, error) {
	n, wait := e.takeUpTo(from, len(envs))
	res := PushResult{Taken: n, RetryAfter: wait}
	out, err := e.admitBatch(envs[:n], Source{Peer: from})
	if err != nil {
		return PushResult{}, err
	}
	for i, o := range out {
		if o.err != nil {
			e.log.Debug("refused envelope from peer", "peer", from, "id", envs[i].ID, "err", o.err)
		} else if o.added {
			res.Accepted++
		}
	}
	if n < len(envs) && !flow {
		return res, ErrRateLimited
	}
	if n == len(envs) {
		res.RetryAfter = 0
	}
	return res, nil
}

// admitted is one envelope's outcome in admitBatch.
type admitted struct {
	added   bool
	deleted int // a receipt: envelopes it deleted here
	err     error
}

// admit checks and stores an envelope whose rate budget was taken.
func (e *Engine) admit(env gossip.Envelope, src Source) (added bool, err error) {
	out, err := e.admitBatch([]gossip.Envelope{env}, src)
	if err != nil {
		return false, err
	}
	return out[0].added, out[0].err
}

// admitBatch checks envelopes whose rate budget was taken, stores the new
// ones in one store transaction with the deletions their receipts cause,
// and then queues each stored one for every neighbour except src. An
// error is the store's (nothing was stored); refusals are per envelope.
func (e *Engine) admitBatch(envs []gossip.Envelope, src Source) ([]admitted, error) {
	// A receipt takes two ops: a batch of MaxBatch/2 envelopes fits.
	if len(envs) > store.MaxBatch/2 {
		first, err := e.admitBatch(envs[:store.MaxBatch/2], src)
		if err != nil {
			return nil, err
		}
		rest, err := e.admitBatch(envs[store.MaxBatch/2:], src)
		return append(first, rest...), err
	}
	out := make([]admitted, len(envs))
	ops := make([]store.Op, 0, len(envs)+1)
	putAt := make([]int, len(envs)) // each envelope's Put in ops, or -1
	tagAt := make([]int, len(envs)) // a receipt's DeleteTag in ops, or -1
	quota := src.quotaKey()
	for i := range envs {
		putAt[i], tagAt[i] = -1, -1
		env := &envs[i]
		switch env.Kind {
		case schemas.Envelope_Kind_receipt:
			secret, err := gossip.ReceiptSecret(*env)
			if err != nil {
				out[i].err = fmt.Errorf("%w: %v", ErrForged, err)
				continue
			}
			tag := gossip.ReceiptTag(secret)
			tagAt[i] = len(ops)
			ops = append(ops, store.Op{DeleteTag: tag[:]})
		case schemas.Envelope_Kind_bundle, schemas.Envelope_Kind_descriptor:
			verify := e.o.VerifyBundle
			if env.Kind == schemas.Envelope_Kind_descriptor {
				verify = e.o.VerifyDescriptor
			}
			// Rare, and it may delete older records (commits of its own).
			if err := e.checkSigned(*env, verify); errors.Is(err, ErrStale) {
				continue
			} else if err != nil {
				out[i].err = err
				continue
			}
		case schemas.Envelope_Kind_decoy:
			continue // cover traffic: dropped on arrival
		case schemas.Envelope_Kind_broadcast:
			// Each broadcast is relayed once: a seen id is dropped before
			// it costs a store lookup (the set confirms a bloom hit
			// exactly).
			env.HopLimit = min(env.HopLimit, e.o.MaxBroadcastHops)
			if e.seen.CheckAndAdd(env.ID) {
				if !src.Peer.IsZero() {
					e.markKnown(src.Peer, env.ID, heldBy(*env))
				}
				e.raiseHops(env.ID, env.HopLimit, src.Peer, true)
				continue
			}
		}
		putAt[i] = len(ops)
		ops = append(ops, store.Op{Put: env, Source: quota})
	}
	var results []store.Result
	if len(ops) > 0 {
		var err error
		if results, err = e.o.Store.Apply(ops); err != nil {
			for i, env := range envs {
				if putAt[i] >= 0 && env.Kind == schemas.Envelope_Kind_broadcast {
					e.seen.Forget(env.ID)
				}
			}
			return nil, err
		}
	}
	for i, env := range envs {
		if tagAt[i] >= 0 {
			out[i].deleted = results[tagAt[i]].Deleted
			if n := out[i].deleted; n > 0 {
				e.log.Debug("receipt deleted envelopes", "count", n)
			}
		}
		if putAt[i] < 0 {
			continue
		}
		r := results[putAt[i]]
		out[i].added, out[i].err = r.Added, r.Err
		if r.Err != nil {
			if env.Kind == schemas.Envelope_Kind_broadcast {
				// Refused (quota, store full): not handled after all, so
				// a later copy, once there is room, must not be dropped
				// as seen.
				e.seen.Forget(env.ID)
			}
			continue
		}
		if !src.Peer.IsZero() {
			e.markKnown(src.Peer, env.ID, heldBy(env))
		}
		if !r.Added {
			e.passThrough(env, src)
			if env.Kind == schemas.Envelope_Kind_broadcast {
				// Stored already though the seen-set had forgotten it (or
				// tombstoned: raiseHops then finds it not held).
				e.raiseHops(env.ID, env.HopLimit, src.Peer, false)
			}
			continue
		}
		if env.Kind == schemas.Envelope_Kind_dm || env.Kind == schemas.Envelope_Kind_broadcast {
			e.wake(env.Destination)
		}
		if env.Kind == schemas.Envelope_Kind_receipt {
			e.receipts.fire()
		}
		if env.Kind == schemas.Envelope_Kind_onion && e.o.OnOnion != nil {
			e.o.OnOnion(env)
		}
		if env.Kind == schemas.Envelope_Kind_descriptor && e.o.OnDescriptor != nil {
			if signed, err := gossip.SignedBytes(env); err == nil {
				e.o.OnDescriptor(signed, src.Peer)
			}
		}
		e.spread(env, src)
	}
	return out, nil
}

// heldBy is the hop limit the neighbour that sent env holds it with: one
// more than it sent, for a broadcast; knownAll for kinds never raised.
func heldBy(env gossip.Envelope) uint8 {
	if env.Kind != schemas.Envelope_Kind_broadcast {
		return knownAll
	}
	return plusOne(env.HopLimit)
}

// plusOne is h+1, saturating.
func plusOne(h uint8) uint8 {
	if h == knownAll {
		return h
	}
	return h + 1
}

// checkSigned verifies a bundle or descriptor envelope and drops older
// records of the same owner; one no newer than what is stored is refused
// with ErrStale.
func (e *Engine) checkSigned(env gossip.Envelope, verify BundleVerifier) error {
	signed, err := gossip.SignedBytes(env)
	if err != nil {
		return err
	}
	if verify == nil {
		return fmt.Errorf("%w: node cannot verify %s envelopes", ErrForged, env.Kind)
	}
	fp, seq, err := verify(signed)
	if err != nil {
		return fmt.Errorf("%w: %s: %v", ErrForged, env.Kind, err)
	}
	if !fp.Equal(identity.Fingerprint(env.Destination)) {
		return fmt.Errorf("%w: %s of %s addressed to %x", ErrForged, env.Kind, fp, env.Destination)
	}
	old, err := e.held(env.Destination, env.Kind)
	if err != nil {
		return err
	}
	for _, o := range old {
		if o.ID == env.ID {
			continue
		}
		b, err := gossip.SignedBytes(o)
		if err != nil {
			continue
		}
		if _, oseq, err := verify(b); err == nil && oseq >= seq {
			return ErrStale
		}
	}
	// Every older record is dropped, or the newer one is refused: the
	// sender keeps its copy and offers it again, and the next try deletes
	// what is left.
	var errs []error
	for _, o := range old {
		if o.ID == env.ID {
			continue
		}
		if _, err := e.o.Store.Delete(o.ID); err != nil {
			errs = append(errs, fmt.Errorf("drop older %s %s: %w", env.Kind, o.ID, err))
		}
	}
	return errors.Join(errs...)
}

func (e *Engine) held(dest []byte, kind schemas.Envelope_Kind) ([]gossip.Envelope, error) {
	all, err := e.o.Store.Mailbox(dest, 0)
	if err != nil {
		return nil, err
	}
	var out []gossip.Envelope
	for _, x := range all {
		if x.Kind == kind {
			out = append(out, x)
		}
	}
	return out, nil
}

// Bundle returns the newest SignedBundle held for a user, or nil.
func (e *Engine) Bundle(fp identity.Fingerprint) ([]byte, error) {
	bs, err := e.held(fp[:], schemas.Envelope_Kind_bundle)
	if err != nil {
		return nil, err
	}
	var best []byte
	var bestSeq uint64
	for _, b := range bs {
		signed, err := gossip.BundleBytes(b)
		if err != nil {
			continue
		}
		if _, seq, err := e.o.VerifyBundle(signed); err == nil && (best == nil || seq > bestSeq) {
			best, bestSeq = signed, seq
		}
	}
	return best, nil
}
