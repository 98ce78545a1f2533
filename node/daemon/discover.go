package daemon

import (
	"net"
	"net/netip"

	"github.com/quicproquo/qpq/mesh/discovery"
	"github.com/quicproquo/qpq/mesh/identity"
	"github.com/quicproquo/qpq/mesh/link"
)

// Ways a link came to be, shown as `via` in qpq status.
const (
	viaStatic  = "static"
	viaMDNS    = "mdns"
	viaInbound = "inbound"
)

// maxDialing bounds concurrent dials to discovered nodes.
const maxDialing = 4

// listensOnLoopback reports whether addr's host is a loopback address:
// mDNS there would announce addresses the node does not serve.
func listensOnLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.IsLoopback()
}

// startDiscovery announces the node and dials what mDNS finds.
func (d *Daemon) startDiscovery() error {
	if !d.cfg.MDNS {
		return nil
	}
	if listensOnLoopback(d.cfg.Listen) {
		d.log.Info("mDNS off: the node listens on a loopback address", "listen", d.cfg.Listen)
		return nil
	}
	disc, err := discovery.Start(discovery.Config{
		FP:     d.id.Fingerprint(),
		Port:   d.tr.Addr().Port,
		Domain: d.cfg.Domain,
		Ifaces: d.cfg.MDNSIfaces,
		Logger: d.log.With("part", "mdns"),
	}, d.discovered)
	if err != nil {
		return err
	}
	d.disc = disc
	d.log.Info("mDNS discovery on", "domain", d.cfg.Domain)
	return nil
}

// discovered is discovery's callback: it must not block, so it hands the
// sighting to a dialling goroutine when there is room.
func (d *Daemon) discovered(f discovery.Found) {
	if d.ctx.Err() != nil || d.linkTo(f.FP) != nil || f.FP.Equal(d.id.Fingerprint()) {
		return
	}
	d.mu.Lock()
	full := len(d.links) >= d.cfg.MaxLinks
	_, busy := d.dialing[f.FP]
	if full || busy || len(d.dialing) >= maxDialing {
		d.mu.Unlock()
		return
	}
	if d.ctx.Err() != nil {
		d.mu.Unlock()
		return
	}
	d.dialing[f.FP] = struct{}{}
	d.wg.Add(1)
	d.mu.Unlock()
	go func() {
		defer d.wg.Done()
		defer func() {
			d.mu.Lock()
			delete(d.dialing, f.FP)
			d.mu.Unlock()
		}()
		l, err := d.dial(link.PeerAddr{Addr: f.Addr, FP: f.FP})
		if err != nil {
			if d.ctx.Err() == nil {
				d.log.Debug("discovered node not reachable", "peer", f.FP, "addr", f.Addr, "err", err)
			}
			return
		}
		d.setVia(f.FP, viaMDNS)
		d.runLink(l)
	}()
}

// setVia records how the link to fp came to be.
func (d *Daemon) setVia(fp identity.Fingerprint, via string) {
	d.mu.Lock()
	d.via[fp] = via
	d.mu.Unlock()
}
