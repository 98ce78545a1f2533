package daemon

import (
	"context"
	"time"

	"github.com/quicproquo/qpq/mesh/link"
)

// keepStatic holds a link to a static peer for the node's whole life,
// redialling with exponential backoff and jitter while it is down.
func (d *Daemon) keepStatic(p link.PeerAddr) {
	b := newBackoff(minRedial, maxRedial)
	for d.ctx.Err() == nil {
		if l := d.linkTo(p.FP); l != nil {
			// Linked already (perhaps it dialled us): watch that link.
			select {
			case <-l.Done():
			case <-d.ctx.Done():
				return
			}
			if time.Since(l.Since()) >= stableLink {
				b.reset()
			}
			continue
		}
		l, err := d.dial(p)
		if err != nil {
			if d.ctx.Err() != nil {
				return
			}
			wait := b.next()
			d.log.Warn("static peer unreachable", "peer", p.String(), "err", err, "retry_in", wait.Round(time.Millisecond))
			select {
			case <-time.After(wait):
			case <-d.ctx.Done():
				return
			}
			continue
		}
		up := time.Now()
		d.runLink(l, linkInfo{via: viaStatic})
		if time.Since(up) >= stableLink {
			b.reset()
		}
		// Pause before redialling so a link that flaps cannot spin; a
		// link that ended soon after it came up (refused, replaced) keeps
		// the backoff growing.
		select {
		case <-time.After(b.next()):
		case <-d.ctx.Done():
			return
		}
	}
}

func (d *Daemon) dial(p link.PeerAddr) (*link.Link, error) {
	ctx, cancel := context.WithTimeout(d.ctx, dialTimeout)
	defer cancel()
	conn, err := d.tr.Dial(ctx, p.Addr, p.FP, link.ALPNPeer)
	if err != nil {
		return nil, err
	}
	return link.Establish(ctx, conn, true, d.peerBootstrap(p.FP), d.hello, d.log)
}
