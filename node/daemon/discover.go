package daemon

import (
	"net"
	"net/netip"

	"github.com/quicproquo/qpq/mesh/discovery"
	"github.com/quicproquo/qpq/mesh/neighbours"
)

// Ways a link came to be, shown as `via` in qpq status.
const (
	viaStatic   = "static"
	viaMDNS     = neighbours.ViaMDNS
	viaExchange = neighbours.ViaExchange
	viaInbound  = "inbound"
)

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
	d.learn(f.FP, []string{f.Addr}, viaMDNS)
}
