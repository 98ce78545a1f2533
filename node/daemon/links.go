package daemon

import (
	"context"
	"time"

	"capnproto.org/go/capnp/v3"

	"github.com/quicproquo/qpq/gossip/wire"
	"github.com/quicproquo/qpq/mesh/identity"
	"github.com/quicproquo/qpq/mesh/link"
	"github.com/quicproquo/qpq/mesh/neighbours"
)

// peerBootstrap is the MeshPeer offered to the neighbour fp. A call
// from it that panics drops its link (Abort: the call is still running).
func (d *Daemon) peerBootstrap(fp identity.Fingerprint) capnp.Client {
	return wire.NewServer(fp, wire.ServerOptions{
		Local:     d.hello,
		Stats:     d.stats,
		Handler:   d.eng,
		Mailboxes: mailboxes{d: d},
		Onions:    onionFrom{r: d.onion},
		Log:       d.log,
		Drop: func(reason string) {
			if l := d.linkTo(fp); l != nil {
				l.Abort(link.CodeRefused, reason)
			}
		},
	}).Client()
}

// stats answers health calls. It takes no lock: Close waits for calls in
// progress while it shuts links down.
func (d *Daemon) stats() (time.Duration, int) {
	return time.Since(d.started), int(d.nlinks.Load())
}

// dialler returns whose connection l is: the side that dialled it.
func (d *Daemon) dialler(l *link.Link) identity.Fingerprint {
	if l.Outbound() {
		return d.id.Fingerprint()
	}
	return l.Peer()
}

// linkInfo is how a link came to be, recorded when it is registered.
type linkInfo struct {
	via     string // viaStatic, viaMDNS or viaExchange; "" for inbound
	anchor  bool   // one of the neighbour plan's random picks
	planned bool   // dialled by the neighbour plan: clears its dialling mark
}

// addLink registers l, resolving a second connection to the same peer:
// when two nodes dial each other at once, both keep the connection dialled
// by the lower fingerprint; a newer connection from the same dialler
// replaces the older (the peer restarted before we noticed). It returns
// false when l lost and was closed. A planned dial stops counting as under
// way in the same step, so the plan never sees it neither dialling nor
// linked.
func (d *Daemon) addLink(l *link.Link, in linkInfo) bool {
	fp := l.Peer()
	d.mu.Lock()
	if in.planned {
		delete(d.dialing, fp)
	}
	old := d.links[fp]
	keepNew := old == nil || d.dialler(l) == d.dialler(old) || d.dialler(l).Less(d.dialler(old))
	if keepNew {
		d.closeBridgeLocked(fp) // a mesh link replaces a bridge link to the same node
		d.links[fp] = l
		if in.via != "" {
			d.via[fp] = in.via
		} else {
			delete(d.via, fp)
		}
		if in.anchor {
			d.anchor[fp] = true
		} else {
			delete(d.anchor, fp)
		}
		d.nlinks.Store(int32(len(d.links)))
	}
	d.mu.Unlock()
	if in.planned {
		d.kickSelect() // the dial is over: the plan may go on
	}
	if !keepNew {
		l.Close(link.CodeDuplicate, "duplicate link")
		d.log.Debug("dropped duplicate link", "peer", l.Peer())
		return false
	}
	if old != nil {
		old.Close(link.CodeDuplicate, "duplicate link")
		d.log.Debug("replaced link", "peer", l.Peer())
	}
	return true
}

func (d *Daemon) removeLink(l *link.Link) {
	d.mu.Lock()
	if d.links[l.Peer()] == l {
		delete(d.links, l.Peer())
		delete(d.via, l.Peer())
		delete(d.anchor, l.Peer())
		d.nlinks.Store(int32(len(d.links)))
	}
	d.mu.Unlock()
	d.kickSelect()
}

// linkTo returns the current link to fp, or nil.
func (d *Daemon) linkTo(fp identity.Fingerprint) *link.Link {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.links[fp]
}

// runLink keeps l registered and probed until it ends. It returns false
// at once when l lost to another connection to the same peer.
func (d *Daemon) runLink(l *link.Link, in linkInfo) (registered bool) {
	if !d.addLink(l, in) {
		return false
	}
	dir := "inbound"
	if l.Outbound() {
		dir = "outbound"
	}
	d.log.Info("link up", "peer", l.Peer(), "addr", l.RemoteAddr(), "direction", dir, "peer_software", l.PeerHello().Software)
	defer d.removeLink(l)
	peer := wire.NewPeer(l.Remote(), l.Version())
	if l.Cells() {
		stopCells, msgs := d.startCells(l)
		defer stopCells()
		if msgs != nil {
			peer = peer.WithMessages(*msgs)
		}
	}
	stopRelay := d.eng.AddPeer(l.Peer(), peer)
	defer stopRelay()
	t := time.NewTicker(probeInterval)
	defer t.Stop()
	for {
		select {
		case <-d.ctx.Done():
			l.Close(link.CodeClosing, "node shutting down")
			return true
		case <-l.Done():
			d.log.Info("link down", "peer", l.Peer(), "addr", l.RemoteAddr(), "reason", link.EndReason(l.Err()))
			if link.ClosedBy(l.Err(), link.CodeReplaced) {
				// It chose a faster link than ours: dialling it again at
				// once would undo that.
				d.table.Cooldown(l.Peer(), neighbours.Explore, time.Now())
			}
			return true
		case <-t.C:
			ctx, cancel := context.WithTimeout(d.ctx, probeTimeout)
			err := l.Probe(ctx)
			cancel()
			if err != nil && d.ctx.Err() == nil {
				d.log.Info("link down: probe failed", "peer", l.Peer(), "err", err)
				l.Close(link.CodeClosing, "probe failed")
				return true
			}
		}
	}
}

// closedAsDuplicate reports whether err is the peer closing a connection
// because it keeps another one to us.
func closedAsDuplicate(err error) bool { return link.ClosedBy(err, link.CodeDuplicate) }
