package daemon

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/quicproquo/qpq/gossip"
	"github.com/quicproquo/qpq/gossip/relay"
	"github.com/quicproquo/qpq/mesh/identity"
	"github.com/quicproquo/qpq/mesh/link"
	"github.com/quicproquo/qpq/node/e2e"
	"github.com/quicproquo/qpq/schemas"
)

const (
	// summaryInterval paces anti-entropy while a link is up.
	summaryInterval = time.Minute
	// purgeInterval paces removal of expired envelopes and tombstones.
	purgeInterval = time.Minute
	// maxPushBatch bounds one push call's envelopes.
	maxPushBatch = 256
)

// verifyBundle adapts e2e.VerifyBundle for the relay engine.
func verifyBundle(signed []byte) (identity.Fingerprint, uint64, error) {
	b, err := e2e.VerifyBundle(signed)
	if err != nil {
		return identity.Fingerprint{}, 0, err
	}
	return b.Fingerprint, b.Sequence, nil
}

// linkPeer is the relay engine's view of a link: push, summary and raise
// calls on the neighbour's MeshPeer.
type linkPeer struct{ l *link.Link }

func (p linkPeer) Push(ctx context.Context, envs []gossip.Envelope) (int, error) {
	fut, release := p.l.Remote().Push(ctx, func(ps schemas.MeshPeer_push_Params) error {
		return gossip.ToCapnpList(envs, ps.NewEnvelopes)
	})
	defer release()
	res, err := fut.Struct()
	if err != nil {
		return 0, err
	}
	return int(res.Accepted()), nil
}

func (p linkPeer) Summary(ctx context.Context, s relay.Summary) error {
	fut, release := p.l.Remote().Summary(ctx, func(ps schemas.MeshPeer_summary_Params) error {
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
		return nil
	})
	defer release()
	_, err := fut.Struct()
	return err
}

// Raise sends a raise notice. A neighbour that predates raise answers
// unimplemented, which the engine is told as relay.ErrRaiseUnsupported.
func (p linkPeer) Raise(ctx context.Context, raises []relay.HopRaise) error {
	out := make([]link.HopRaise, len(raises))
	for i, r := range raises {
		out[i] = link.HopRaise{ID: r.ID, HopLimit: r.HopLimit}
	}
	err := p.l.Raise(ctx, out)
	if errors.Is(err, link.ErrNotServed) {
		return fmt.Errorf("%w: %v", relay.ErrRaiseUnsupported, err)
	}
	return err
}

// raiseHandler applies a neighbour's raise notice (link.PeerServer has
// checked its length and ids).
func (d *Daemon) raiseHandler(from identity.Fingerprint) func(context.Context, []link.HopRaise) error {
	return func(ctx context.Context, raises []link.HopRaise) error {
		rs := make([]relay.HopRaise, len(raises))
		for i, r := range raises {
			rs[i] = relay.HopRaise{ID: gossip.ID(r.ID), HopLimit: r.HopLimit}
		}
		if err := d.eng.HandleRaise(from, rs); err != nil {
			return fmt.Errorf("raise: %w", err)
		}
		return nil
	}
}

// pushHandler stores what a neighbour pushes.
func (d *Daemon) pushHandler(from identity.Fingerprint) func(context.Context, schemas.Envelope_List) (uint32, error) {
	return func(ctx context.Context, list schemas.Envelope_List) (uint32, error) {
		if list.Len() > maxPushBatch {
			return 0, fmt.Errorf("push of %d envelopes, at most %d", list.Len(), maxPushBatch)
		}
		var accepted uint32
		for i := 0; i < list.Len(); i++ {
			env, err := gossip.FromCapnp(list.At(i))
			if err != nil {
				d.log.Debug("dropped envelope from peer", "peer", from, "err", err)
				continue
			}
			added, err := d.eng.Accept(env, relay.Source{Peer: from})
			if errors.Is(err, relay.ErrRateLimited) {
				return accepted, err
			}
			if err != nil {
				d.log.Debug("refused envelope from peer", "peer", from, "id", env.ID, "err", err)
				continue
			}
			if added {
				accepted++
			}
		}
		return accepted, nil
	}
}

func (d *Daemon) summaryHandler(from identity.Fingerprint) func(context.Context, schemas.Summary) error {
	return func(ctx context.Context, s schemas.Summary) error {
		filter, err := s.Filter()
		if err != nil {
			return err
		}
		key, err := s.Key()
		if err != nil {
			return err
		}
		return d.eng.HandleSummary(from, relay.Summary{Filter: filter, Key: key, Count: s.Count()})
	}
}

// syncLink runs anti-entropy with one neighbour: at once, then
// periodically, until the link ends.
func (d *Daemon) syncLink(l *link.Link) {
	// A failed summary is retried soon (1 s, doubling): the neighbour may
	// not have registered the link yet when ours is up.
	retry := time.Second
	for {
		ctx, cancel := context.WithTimeout(d.ctx, 30*time.Second)
		err := d.eng.SendSummary(ctx, l.Peer())
		cancel()
		wait := summaryInterval
		if err != nil && d.ctx.Err() == nil {
			d.log.Debug("summary failed", "peer", l.Peer(), "err", err)
			if retry < summaryInterval {
				wait, retry = retry, retry*2
			}
		} else {
			retry = time.Second
		}
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-l.Done():
			t.Stop()
			return
		case <-d.ctx.Done():
			t.Stop()
			return
		}
	}
}

// purgeLoop removes expired envelopes and old tombstones.
func (d *Daemon) purgeLoop() {
	t := time.NewTicker(purgeInterval)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			exp, tomb, err := d.st.Purge()
			if err != nil {
				d.log.Error("purge failed", "err", err)
			} else if exp+tomb > 0 {
				d.log.Debug("purged", "expired", exp, "tombstones", tomb)
			}
			if n := d.eng.PruneBoosts(); n > 0 {
				d.log.Debug("forgot raised hop limits of broadcasts no longer held", "count", n)
			}
		case <-d.ctx.Done():
			return
		}
	}
}
