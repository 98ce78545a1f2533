package daemon

import (
	"context"
	"time"

	"github.com/quicproquo/qpq/mesh/identity"
	"github.com/quicproquo/qpq/mesh/link"
	"github.com/quicproquo/qpq/node/e2e"
)

const (
	// summaryInterval paces anti-entropy while a link is up.
	summaryInterval = time.Minute
	// purgeInterval paces removal of expired envelopes and tombstones.
	purgeInterval = time.Minute
)

// verifyBundle adapts e2e.VerifyBundle for the relay engine.
func verifyBundle(signed []byte) (identity.Fingerprint, uint64, error) {
	b, err := e2e.VerifyBundle(signed)
	if err != nil {
		return identity.Fingerprint{}, 0, err
	}
	return b.Fingerprint, b.Sequence, nil
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
