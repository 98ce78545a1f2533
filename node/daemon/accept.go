package daemon

import (
	"context"
	"fmt"
	"sync"
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
			release, err := d.startHandshake(clientKey(conn.RemoteAddr()))
			if err != nil {
				conn.Refuse("busy")
				d.log.Debug("refused inbound link", "addr", conn.RemoteAddr(), "err", err)
				continue
			}
			d.wg.Add(1)
			go func() {
				defer d.wg.Done()
				d.acceptPeer(conn, release)
			}()
		case link.ALPNDial:
			// Not a neighbour: no inbound-cap check, no neighbour slot.
			release, err := d.startHandshake(clientKey(conn.RemoteAddr()))
			if err != nil {
				conn.Refuse("busy")
				continue
			}
			d.wg.Add(1)
			go func() {
				defer d.wg.Done()
				d.acceptDialled(conn, release)
			}()
		case link.ALPNClient:
			c, err := d.clients.admit(conn)
			if err != nil {
				conn.Refuse(err.Error())
				d.log.Debug("refused client", "addr", conn.RemoteAddr(), "err", err)
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

// acceptPeer runs hello on an inbound node connection; release ends its
// handshake's count once hello is over.
func (d *Daemon) acceptPeer(conn *link.Incoming, release func()) {
	ctx, cancel := context.WithTimeout(d.ctx, inboundHelloTimeout)
	fp, err := conn.PeerFingerprint()
	if err != nil {
		cancel()
		release()
		conn.Refuse(err.Error())
		return
	}
	// Checked before hello, so the dialler sees a failed dial (and backs
	// off) rather than a link that dies at once.
	if !d.inboundAllowed(fp) {
		cancel()
		release()
		conn.Refuse("too many inbound links")
		d.warnCap(fp)
		return
	}
	l, err := conn.Establish(ctx, d.peerBootstrap(fp), d.hello, d.log)
	cancel()
	release()
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

// startHandshake counts an inbound handshake against the node's bound and
// its source address's (IPv4 address or IPv6 /64), so stalled handshakes
// from one address cannot hold every slot; release ends it.
func (d *Daemon) startHandshake(key string) (release func(), err error) {
	d.hsMu.Lock()
	defer d.hsMu.Unlock()
	if d.hsByAddr[key] >= maxHandshakesPerAddr {
		return nil, fmt.Errorf("%d handshakes from %s in progress", maxHandshakesPerAddr, key)
	}
	select {
	case d.pending <- struct{}{}:
	default:
		return nil, fmt.Errorf("%d handshakes in progress", maxPendingHandshakes)
	}
	d.hsByAddr[key]++
	var once sync.Once
	return func() {
		once.Do(func() {
			d.hsMu.Lock()
			if d.hsByAddr[key]--; d.hsByAddr[key] <= 0 {
				delete(d.hsByAddr, key)
			}
			d.hsMu.Unlock()
			<-d.pending
		})
	}, nil
}
