package daemon

import (
	"context"
	"time"

	"github.com/quicproquo/qpq/mesh/identity"
	"github.com/quicproquo/qpq/mesh/link"
)

func (d *Daemon) acceptLoop() {
	for {
		conn, err := d.tr.AcceptIncoming(d.ctx)
		if err != nil {
			if d.ctx.Err() == nil {
				d.log.Error("accept stopped", "err", err)
			}
			return
		}
		switch conn.ALPN() {
		case link.ALPNPeer:
			select {
			case d.pending <- struct{}{}:
			default:
				conn.Refuse("busy")
				d.log.Warn("refused inbound link: too many handshakes in progress", "addr", conn.RemoteAddr())
				continue
			}
			d.wg.Add(1)
			go func() {
				defer d.wg.Done()
				d.acceptPeer(conn)
			}()
		case link.ALPNClient:
			c, err := d.clients.admit(conn)
			if err != nil {
				conn.Refuse(err.Error())
				d.log.Warn("refused client", "addr", conn.RemoteAddr(), "err", err)
				continue
			}
			d.wg.Add(1)
			go func() {
				defer d.wg.Done()
				defer d.clients.release(c)
				d.serveClient(c)
			}()
		default:
			conn.Refuse("unknown protocol")
		}
	}
}

func (d *Daemon) acceptPeer(conn *link.Incoming) {
	ctx, cancel := context.WithTimeout(d.ctx, dialTimeout)
	fp, err := conn.PeerFingerprint()
	if err != nil {
		cancel()
		<-d.pending
		conn.Refuse(err.Error())
		return
	}
	// Checked before hello, so the dialler sees a failed dial (and backs
	// off) rather than a link that dies at once.
	if !d.inboundAllowed(fp) {
		cancel()
		<-d.pending
		conn.Refuse("too many inbound links")
		d.warnCap(fp)
		return
	}
	l, err := conn.Establish(ctx, d.peerBootstrap(fp), d.hello, d.log)
	cancel()
	<-d.pending
	if err != nil {
		if closedAsDuplicate(err) || closedAsDuplicate(conn.Err()) {
			// Both sides dialled at once and the peer kept the other
			// connection: routine, not a warning.
			d.log.Debug("inbound link superseded by our own dial", "addr", conn.RemoteAddr())
			return
		}
		d.log.Warn("refused inbound link", "addr", conn.RemoteAddr(), "err", err)
		return
	}
	if !d.inboundAllowed(fp) {
		l.Close(link.CodeRefused, "too many inbound links")
		d.warnCap(fp)
		return
	}
	d.runLink(l, linkInfo{})
}

// inboundAllowed reports whether an inbound link from fp may be held:
// static peers, and nodes linked already (a reconnect replaces the old
// link), always; others while inbound links are under the cap.
func (d *Daemon) inboundAllowed(fp identity.Fingerprint) bool {
	for _, p := range d.cfg.Peers {
		if p.FP == fp {
			return true
		}
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.links[fp] != nil {
		return true
	}
	n := 0
	for _, l := range d.links {
		if !l.Outbound() {
			n++
		}
	}
	return n < d.inboundCap()
}

// warnCap logs a refusal at the inbound cap, at most once a minute.
func (d *Daemon) warnCap(fp identity.Fingerprint) {
	d.mu.Lock()
	warn := time.Since(d.capWarned) >= time.Minute
	if warn {
		d.capWarned = time.Now()
	}
	d.mu.Unlock()
	if warn {
		d.log.Warn("refused inbound link: at the inbound cap (logged once a minute)", "peer", fp, "cap", d.inboundCap())
	} else {
		d.log.Debug("refused inbound link: at the inbound cap", "peer", fp)
	}
}
