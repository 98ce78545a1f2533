// Package discovery finds neighbour nodes on shared links by mDNS: it
// announces this node as _quicproquo._udp.local. (SRV to the QUIC port,
// TXT txtvers=1, id=<fingerprint>, domain=<mesh domain>) and browses for
// other nodes of the same mesh domain on the interfaces it is told to use.
//
// Queries are sent with github.com/hashicorp/mdns, one one-shot query per
// interface per round. The responder is this package's own: it shares UDP
// port 5353 with avahi or umdns (SO_REUSEADDR and SO_REUSEPORT), answers
// per interface with that interface's addresses, and sends unsolicited
// announcements, which other nodes also read, so discovery does not depend
// on which responder bound the port last. Interfaces that appear, go down,
// come back or change address are picked up by polling.
package discovery

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"regexp"
	"sync"
	"time"

	"github.com/hashicorp/mdns"
	"github.com/quicproquo/qpq/mesh/identity"
	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
)

// Service is the DNS-SD service type qpq nodes announce.
const Service = "_quicproquo._udp"

// serviceAddr is the fully qualified name browsed for.
const serviceAddr = Service + ".local."

// Defaults for the zero values of Config's fields.
const (
	DefaultDomain         = "qpq"
	DefaultBrowseEvery    = 30 * time.Second
	DefaultIfacePollEvery = 5 * time.Second
)

// queryTimeout is how long one hashicorp query listens for answers.
const queryTimeout = time.Second

// announceRepeat is the gap between the first two announcements on an
// interface that has just appeared (RFC 6762 section 8.3).
const announceRepeat = time.Second

// Config says what to announce and where to look.
type Config struct {
	// FP is this node's fingerprint, announced in TXT and never reported
	// as found. Required.
	FP identity.Fingerprint
	// Port is the node's QUIC UDP port, announced in SRV. Required.
	Port int
	// Domain is the mesh domain; only nodes of the same domain are
	// reported. Zero means DefaultDomain.
	Domain string
	// Ifaces chooses interfaces by name: an interface is used when it is
	// up, multicast-capable and matches any expression. Empty means every
	// such interface that is not a loopback.
	Ifaces []*regexp.Regexp
	// BrowseEvery is the time between browse and announce rounds; rounds
	// also run at start and whenever the chosen interfaces change. Zero
	// means DefaultBrowseEvery.
	BrowseEvery time.Duration
	// IfacePollEvery is how often interfaces are listed to notice ones
	// that appear, vanish or change address. Zero means
	// DefaultIfacePollEvery.
	IfacePollEvery time.Duration
	// Logger receives what the running loops have to say. Nil discards.
	Logger *slog.Logger
}

// Found is one sighting of another node of the same mesh domain.
type Found struct {
	// FP is the node's fingerprint from its TXT record; pin it when
	// dialling.
	FP identity.Fingerprint
	// Addr is host:port of its QUIC endpoint; IPv6 link-local hosts carry
	// the zone ("[fe80::1%eth0]:7443").
	Addr string
	// Domain is the node's mesh domain (always Config.Domain).
	Domain string
	// Iface is the name of the interface it was seen on.
	Iface string
}

// Discovery runs mDNS announce and browse until Close.
type Discovery struct {
	cfg   Config
	log   *slog.Logger
	found func(Found)
	src   ifaceSource
	txt   []string

	ctx        context.Context
	cancel     context.CancelFunc
	wg         sync.WaitGroup
	wakeBrowse chan struct{} // size 1: asks the browse loop for a round

	closeOnce sync.Once
	closeErr  error

	// The responder's sockets; nil when port 5353 could not be bound.
	raw4  net.PacketConn
	conn4 *ipv4.PacketConn
	raw6  net.PacketConn
	conn6 *ipv6.PacketConn

	mu     sync.Mutex // guards the fields below
	ifaces map[int]*ifaceInfo
	zones  map[int]*mdns.MDNSService

	cbMu sync.Mutex // serialises calls of found
}

// populate fills in defaults and returns every problem with cfg.
func (cfg *Config) populate() error {
	var errs []error
	if cfg.FP.IsZero() {
		errs = append(errs, errors.New("discovery: no fingerprint"))
	}
	if cfg.Port < 1 || cfg.Port > 65535 {
		errs = append(errs, fmt.Errorf("discovery: port %d out of range", cfg.Port))
	}
	if cfg.Domain == "" {
		cfg.Domain = DefaultDomain
	}
	if cfg.BrowseEvery == 0 {
		cfg.BrowseEvery = DefaultBrowseEvery
	} else if cfg.BrowseEvery < 0 {
		errs = append(errs, fmt.Errorf("discovery: negative browse interval %v", cfg.BrowseEvery))
	}
	if cfg.IfacePollEvery == 0 {
		cfg.IfacePollEvery = DefaultIfacePollEvery
	} else if cfg.IfacePollEvery < 0 {
		errs = append(errs, fmt.Errorf("discovery: negative interface poll interval %v", cfg.IfacePollEvery))
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return errors.Join(errs...)
}

// Start begins announcing and browsing. found is called, never
// concurrently and never after Close returns, for every sighting of
// another node of the same domain; the same node is reported again on
// every round that sees it, so found should be quick and idempotent. A
// port 5353 that cannot be bound is logged, not an error: browsing goes on.
func Start(cfg Config, found func(Found)) (*Discovery, error) {
	return start(cfg, found, osIfaces{})
}

func start(cfg Config, found func(Found), src ifaceSource) (*Discovery, error) {
	if found == nil {
		return nil, errors.New("discovery: nil found callback")
	}
	if err := cfg.populate(); err != nil {
		return nil, err
	}
	txt, err := buildTXT(cfg.FP, cfg.Domain)
	if err != nil {
		return nil, fmt.Errorf("discovery: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	d := &Discovery{
		cfg:        cfg,
		log:        cfg.Logger,
		found:      found,
		src:        src,
		txt:        txt,
		ctx:        ctx,
		cancel:     cancel,
		wakeBrowse: make(chan struct{}, 1),
		ifaces:     make(map[int]*ifaceInfo),
		zones:      make(map[int]*mdns.MDNSService),
	}
	d.openResponder()
	if d.conn4 != nil {
		d.wg.Add(1)
		go d.readLoop4()
	}
	if d.conn6 != nil {
		d.wg.Add(1)
		go d.readLoop6()
	}
	d.wg.Add(2)
	go d.browseLoop()
	go d.run()
	return d, nil
}

// interfaces returns the interfaces in use now, so announcing (which
// sends) happens without holding mu.
func (d *Discovery) interfaces() []*ifaceInfo {
	d.mu.Lock()
	defer d.mu.Unlock()
	infos := make([]*ifaceInfo, 0, len(d.ifaces))
	for _, info := range d.ifaces {
		infos = append(infos, info)
	}
	return infos
}

// Close says goodbye on every interface, stops every goroutine Start began
// and waits for them. It is safe to call more than once.
func (d *Discovery) Close() error {
	d.closeOnce.Do(func() {
		d.cancel()
		for _, info := range d.interfaces() {
			d.announce(info, true)
		}
		var errs []error
		if d.raw4 != nil {
			errs = append(errs, d.raw4.Close())
		}
		if d.raw6 != nil {
			errs = append(errs, d.raw6.Close())
		}
		d.wg.Wait()
		if err := errors.Join(errs...); err != nil {
			d.closeErr = fmt.Errorf("discovery: close: %w", err)
		}
	})
	return d.closeErr
}

// run owns the interface table: it polls interfaces, announces, and asks
// for browse rounds.
func (d *Discovery) run() {
	defer d.wg.Done()
	poll := time.NewTicker(d.cfg.IfacePollEvery)
	defer poll.Stop()
	browse := time.NewTicker(d.cfg.BrowseEvery)
	defer browse.Stop()
	repeat := time.NewTimer(announceRepeat)
	defer repeat.Stop()
	var fresh []int // interfaces owed their second announcement

	rescan := func() {
		changed := d.rescan()
		if len(changed) == 0 {
			return
		}
		for _, info := range changed {
			d.announce(info, false)
			fresh = append(fresh, info.ifi.Index)
		}
		repeat.Reset(announceRepeat)
		d.kickBrowse()
	}
	rescan()
	d.kickBrowse()
	for {
		select {
		case <-d.ctx.Done():
			return
		case <-poll.C:
			rescan()
		case <-repeat.C:
			for _, idx := range fresh {
				d.mu.Lock()
				info := d.ifaces[idx]
				d.mu.Unlock()
				if info != nil {
					d.announce(info, false)
				}
			}
			fresh = fresh[:0]
		case <-browse.C:
			for _, info := range d.interfaces() {
				d.announce(info, false)
			}
			d.kickBrowse()
		}
	}
}

// kickBrowse asks for a browse round without blocking; a round already
// asked for covers this one.
func (d *Discovery) kickBrowse() {
	select {
	case d.wakeBrowse <- struct{}{}:
	default:
	}
}

// rescan lists interfaces, updates the table, the zones and the group
// memberships, and returns the interfaces that are new or changed.
func (d *Discovery) rescan() []*ifaceInfo {
	now, err := scanIfaces(d.src, d.cfg.Ifaces)
	if err != nil {
		d.log.Warn("mdns: listing interfaces", "err", err)
		return nil
	}
	d.mu.Lock()
	old := d.ifaces
	var changed, gone []*ifaceInfo
	for idx, info := range now {
		if o, ok := old[idx]; !ok || o.key != info.key {
			changed = append(changed, info)
			if ok {
				gone = append(gone, o)
			}
		}
	}
	for idx, o := range old {
		if _, ok := now[idx]; !ok {
			gone = append(gone, o)
		}
	}
	d.mu.Unlock()

	for _, o := range gone {
		d.leave(o)
	}
	zones := make(map[int]*mdns.MDNSService, len(changed))
	for _, info := range changed {
		z, err := d.zoneFor(info)
		if err != nil {
			d.log.Warn("mdns: records", "iface", info.ifi.Name, "err", err)
			delete(now, info.ifi.Index)
			continue
		}
		zones[info.ifi.Index] = z
		d.join(info)
	}

	d.mu.Lock()
	d.ifaces = now
	for idx := range d.zones {
		if _, ok := now[idx]; !ok {
			delete(d.zones, idx)
		}
	}
	for idx, z := range zones {
		d.zones[idx] = z
	}
	d.mu.Unlock()

	for _, o := range gone {
		if _, ok := now[o.ifi.Index]; !ok {
			d.log.Info("mdns: interface gone", "iface", o.ifi.Name)
		}
	}
	var out []*ifaceInfo
	for _, info := range changed {
		if _, ok := now[info.ifi.Index]; ok {
			d.log.Info("mdns: using interface", "iface", info.ifi.Name, "addrs", info.key)
			out = append(out, info)
		}
	}
	return out
}

// zoneFor returns the records announced on info: its own addresses only.
func (d *Discovery) zoneFor(info *ifaceInfo) (*mdns.MDNSService, error) {
	ips := append(info.v4(), info.v6LinkLocal()...)
	fp := d.cfg.FP.String()
	host := "qpq-" + fp[:16] + ".local."
	return mdns.NewMDNSService(fp, Service, "local.", host, d.cfg.Port, ips, d.txt)
}

// report checks a candidate and hands it to found.
func (d *Discovery) report(info *ifaceInfo, txt []string, port int, v4s, v6s []net.IP, v6zone string) {
	fp, domain, err := parseTXT(txt)
	if err != nil {
		d.log.Debug("mdns: ignoring entry", "iface", info.ifi.Name, "err", err)
		return
	}
	if domain != d.cfg.Domain || fp.Equal(d.cfg.FP) || port < 1 || port > 65535 {
		return
	}
	addr := pickAddr(info, v4s, v6s, v6zone, port)
	if addr == "" {
		return
	}
	d.cbMu.Lock()
	defer d.cbMu.Unlock()
	if d.ctx.Err() != nil {
		return
	}
	d.found(Found{FP: fp, Addr: addr, Domain: domain, Iface: info.ifi.Name})
}

// pickAddr chooses the address to dial: an IPv4 address on the
// interface's own subnet, else an IPv6 link-local one with the
// interface's zone, else any IPv4 or global IPv6 address given.
func pickAddr(info *ifaceInfo, v4s, v6s []net.IP, v6zone string, port int) string {
	p := fmt.Sprint(port)
	for _, ip := range v4s {
		if info.onLink(ip) {
			return net.JoinHostPort(ip.String(), p)
		}
	}
	for _, ip := range v6s {
		if ip.IsLinkLocalUnicast() && (v6zone == "" || v6zone == info.ifi.Name) {
			return net.JoinHostPort(ip.String()+"%"+info.ifi.Name, p)
		}
	}
	for _, ip := range v4s {
		if ip.IsGlobalUnicast() || ip.IsPrivate() {
			return net.JoinHostPort(ip.String(), p)
		}
	}
	for _, ip := range v6s {
		if ip.IsGlobalUnicast() {
			return net.JoinHostPort(ip.String(), p)
		}
	}
	return ""
}
