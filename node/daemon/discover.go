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

// discovered is discovery's callback: it must not block.
func (d *Daemon) discovered(f discovery.Found) {
	d.dialLearnt(f.FP, []string{f.Addr}, viaMDNS)
}

// dialLearnt links to a node learnt by mDNS or peer exchange, in its own
// goroutine, when the node is not linked or being dialled already, the
// node has fewer than --max-links links, and few dials are under way. It
// never blocks the caller.
func (d *Daemon) dialLearnt(fp identity.Fingerprint, addrs []string, via string) {
	if fp.Equal(d.id.Fingerprint()) || len(addrs) == 0 {
		return
	}
	d.mu.Lock()
	_, linked := d.links[fp]
	_, busy := d.dialing[fp]
	full := len(d.links) >= d.cfg.MaxLinks
	// ctx is checked under mu: Close cancels under mu, so a goroutine
	// counted here is counted before Close waits.
	if linked || busy || full || len(d.dialing) >= maxDialing || d.ctx.Err() != nil {
		d.mu.Unlock()
		return
	}
	d.dialing[fp] = struct{}{}
	d.wg.Add(1)
	d.mu.Unlock()
	go func() {
		defer d.wg.Done()
		defer func() {
			d.mu.Lock()
			delete(d.dialing, fp)
			d.mu.Unlock()
		}()
		for _, a := range addrs {
			l, err := d.dial(link.PeerAddr{Addr: a, FP: fp})
			if err != nil {
				if d.ctx.Err() == nil {
					d.log.Debug("learnt node not reachable", "peer", fp, "addr", a, "via", via, "err", err)
				}
				continue
			}
			d.setVia(fp, via)
			d.runLink(l)
			return
		}
	}()
}

// setVia records how the link to fp came to be.
func (d *Daemon) setVia(fp identity.Fingerprint, via string) {
	d.mu.Lock()
	d.via[fp] = via
	d.mu.Unlock()
}
