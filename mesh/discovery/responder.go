package discovery

import (
	"context"
	"errors"
	"net"
	"strings"
	"syscall"

	"github.com/miekg/dns"
	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
)

// mDNS groups and port (RFC 6762).
var (
	group4 = &net.UDPAddr{IP: net.IPv4(224, 0, 0, 251), Port: 5353}
	group6 = &net.UDPAddr{IP: net.ParseIP("ff02::fb"), Port: 5353}
)

// legacyTTL caps record TTLs in answers to legacy unicast queries (RFC 6762
// section 6.7).
const legacyTTL = 10

// cacheFlush is the top bit of a record's class in mDNS responses: the
// record replaces what caches hold under its name (RFC 6762 section 10.2).
const cacheFlush = 1 << 15

// listen5353 binds port 5353 of network ("udp4" or "udp6") so that other
// responders on the host can bind it too.
func listen5353(network, host string) (net.PacketConn, error) {
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) { serr = reusePort(fd) })
		return errors.Join(err, serr)
	}}
	return lc.ListenPacket(context.Background(), network, net.JoinHostPort(host, "5353"))
}

// openResponder binds the responder's sockets; failures are logged and
// leave the socket nil.
func (d *Discovery) openResponder() {
	if c, err := listen5353("udp4", "0.0.0.0"); err != nil {
		d.log.Warn("mdns: cannot bind IPv4 port 5353; browsing only", "err", err)
	} else {
		p := ipv4.NewPacketConn(c)
		err := errors.Join(
			p.SetControlMessage(ipv4.FlagInterface, true),
			p.SetMulticastTTL(255),
			p.SetMulticastLoopback(true),
		)
		if err != nil {
			d.log.Warn("mdns: IPv4 socket options", "err", err)
			c.Close()
		} else {
			d.raw4, d.conn4 = c, p
		}
	}
	if c, err := listen5353("udp6", "::"); err != nil {
		d.log.Info("mdns: cannot bind IPv6 port 5353", "err", err)
	} else {
		p := ipv6.NewPacketConn(c)
		err := errors.Join(
			p.SetControlMessage(ipv6.FlagInterface, true),
			p.SetMulticastHopLimit(255),
			p.SetMulticastLoopback(true),
		)
		if err != nil {
			d.log.Info("mdns: IPv6 socket options", "err", err)
			c.Close()
		} else {
			d.raw6, d.conn6 = c, p
		}
	}
}

// join adds the mDNS groups on info's interface. Joining a group already
// joined is not an error worth logging.
func (d *Discovery) join(info *ifaceInfo) {
	if d.conn4 != nil && len(info.v4()) > 0 {
		if err := d.conn4.JoinGroup(&info.ifi, group4); err != nil && !errors.Is(err, syscall.EADDRINUSE) {
			d.log.Warn("mdns: joining IPv4 group", "iface", info.ifi.Name, "err", err)
		}
	}
	if d.conn6 != nil && len(info.v6LinkLocal()) > 0 {
		if err := d.conn6.JoinGroup(&info.ifi, group6); err != nil && !errors.Is(err, syscall.EADDRINUSE) {
			d.log.Info("mdns: joining IPv6 group", "iface", info.ifi.Name, "err", err)
		}
	}
}

// leave drops the groups on info's interface; the interface may be gone
// already, so errors are only worth a debug line.
func (d *Discovery) leave(info *ifaceInfo) {
	if d.conn4 != nil {
		if err := d.conn4.LeaveGroup(&info.ifi, group4); err != nil {
			d.log.Debug("mdns: leaving IPv4 group", "iface", info.ifi.Name, "err", err)
		}
	}
	if d.conn6 != nil {
		if err := d.conn6.LeaveGroup(&info.ifi, group6); err != nil {
			d.log.Debug("mdns: leaving IPv6 group", "iface", info.ifi.Name, "err", err)
		}
	}
}

// lookup returns the interface and records for an interface index, or nil
// when discovery does not use that interface.
func (d *Discovery) lookup(idx int) (*ifaceInfo, dnsZone) {
	d.mu.Lock()
	defer d.mu.Unlock()
	info, z := d.ifaces[idx], d.zones[idx]
	if info == nil || z == nil {
		return nil, nil
	}
	return info, z
}

// dnsZone answers questions; *mdns.MDNSService is one.
type dnsZone interface {
	Records(q dns.Question) []dns.RR
}

func (d *Discovery) readLoop4() {
	defer d.wg.Done()
	buf := make([]byte, 9000)
	for {
		n, cm, src, err := d.conn4.ReadFrom(buf)
		if err != nil {
			if d.ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return
			}
			d.log.Debug("mdns: IPv4 read", "err", err)
			continue
		}
		if cm == nil {
			continue
		}
		d.handle(buf[:n], cm.IfIndex, src, false)
	}
}

func (d *Discovery) readLoop6() {
	defer d.wg.Done()
	buf := make([]byte, 9000)
	for {
		n, cm, src, err := d.conn6.ReadFrom(buf)
		if err != nil {
			if d.ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return
			}
			d.log.Debug("mdns: IPv6 read", "err", err)
			continue
		}
		if cm == nil {
			continue
		}
		d.handle(buf[:n], cm.IfIndex, src, true)
	}
}

// handle answers a query or reads a response that arrived on interface idx.
func (d *Discovery) handle(pkt []byte, idx int, src net.Addr, v6 bool) {
	info, z := d.lookup(idx)
	if info == nil {
		return
	}
	from, ok := src.(*net.UDPAddr)
	if !ok {
		return
	}
	var m dns.Msg
	if err := m.Unpack(pkt); err != nil {
		d.log.Debug("mdns: bad packet", "iface", info.ifi.Name, "from", from, "err", err)
		return
	}
	if m.Opcode != dns.OpcodeQuery || m.Rcode != 0 {
		return
	}
	if m.Response {
		d.readResponse(&m, info)
		return
	}
	d.answer(&m, info, z, from, v6)
}

// answer replies to a query per RFC 6762: legacy unicast (source port not
// 5353) to the asker with its id and question, a QU question by unicast,
// anything else by multicast on the interface it came in on.
func (d *Discovery) answer(q *dns.Msg, info *ifaceInfo, z dnsZone, from *net.UDPAddr, v6 bool) {
	legacy := from.Port != 5353
	unicast := legacy
	var rrs []dns.RR
	for _, qu := range q.Question {
		if qu.Qclass&cacheFlush != 0 {
			unicast = true
		}
		qu.Name = strings.ToLower(qu.Name)
		qu.Qclass &^= cacheFlush
		rrs = append(rrs, z.Records(qu)...)
	}
	if len(rrs) == 0 {
		return
	}
	resp := &dns.Msg{
		MsgHdr:   dns.MsgHdr{Response: true, Authoritative: true},
		Compress: true,
	}
	for _, rr := range rrs {
		h := rr.Header()
		if legacy {
			h.Ttl = min(h.Ttl, legacyTTL)
		} else if h.Rrtype != dns.TypePTR {
			h.Class |= cacheFlush
		}
	}
	resp.Answer = rrs
	if legacy {
		resp.Id = q.Id
		resp.Question = q.Question
	}
	buf, err := resp.Pack()
	if err != nil {
		d.log.Warn("mdns: packing answer", "err", err)
		return
	}
	var dst *net.UDPAddr
	if unicast {
		dst = from
	}
	d.send(buf, info, dst, v6)
}

// announce multicasts this node's records on info's interface, or with
// bye their withdrawal (TTL 0).
func (d *Discovery) announce(info *ifaceInfo, bye bool) {
	d.mu.Lock()
	z := d.zones[info.ifi.Index]
	d.mu.Unlock()
	if z == nil {
		return
	}
	rrs := z.Records(dns.Question{Name: serviceAddr, Qtype: dns.TypePTR, Qclass: dns.ClassINET})
	for _, rr := range rrs {
		h := rr.Header()
		if bye {
			h.Ttl = 0
		}
		if h.Rrtype != dns.TypePTR {
			h.Class |= cacheFlush
		}
	}
	m := &dns.Msg{MsgHdr: dns.MsgHdr{Response: true, Authoritative: true}, Compress: true, Answer: rrs}
	buf, err := m.Pack()
	if err != nil {
		d.log.Warn("mdns: packing announcement", "err", err)
		return
	}
	if len(info.v4()) > 0 {
		d.send(buf, info, nil, false)
	}
	if len(info.v6LinkLocal()) > 0 {
		d.send(buf, info, nil, true)
	}
}

// send writes buf to dst, or with a nil dst to the mDNS group on info's
// interface.
func (d *Discovery) send(buf []byte, info *ifaceInfo, dst *net.UDPAddr, v6 bool) {
	var err error
	switch {
	case !v6 && d.conn4 != nil:
		if dst == nil {
			_, err = d.conn4.WriteTo(buf, &ipv4.ControlMessage{IfIndex: info.ifi.Index}, group4)
		} else {
			_, err = d.conn4.WriteTo(buf, nil, dst)
		}
	case v6 && d.conn6 != nil:
		if dst == nil {
			g := *group6
			g.Zone = info.ifi.Name
			_, err = d.conn6.WriteTo(buf, &ipv6.ControlMessage{IfIndex: info.ifi.Index}, &g)
		} else {
			_, err = d.conn6.WriteTo(buf, nil, dst)
		}
	default:
		return
	}
	if err != nil && d.ctx.Err() == nil {
		d.log.Debug("mdns: send", "iface", info.ifi.Name, "v6", v6, "err", err)
	}
}

// readResponse reports the nodes announced in an mDNS response that came
// in on info's interface.
func (d *Discovery) readResponse(m *dns.Msg, info *ifaceInfo) {
	type inst struct {
		port   int
		target string
		txt    []string
		hasSRV bool
		hasTXT bool
	}
	insts := make(map[string]*inst)
	get := func(name string) *inst {
		name = strings.ToLower(name)
		if in := insts[name]; in != nil {
			return in
		}
		in := &inst{}
		insts[name] = in
		return in
	}
	v4 := make(map[string][]net.IP)
	v6 := make(map[string][]net.IP)
	suffix := "." + serviceAddr
	for _, rr := range append(m.Answer, m.Extra...) {
		h := rr.Header()
		if h.Ttl == 0 {
			continue // goodbye
		}
		name := strings.ToLower(h.Name)
		switch r := rr.(type) {
		case *dns.SRV:
			if strings.HasSuffix(name, suffix) {
				in := get(name)
				in.port, in.target, in.hasSRV = int(r.Port), strings.ToLower(r.Target), true
			}
		case *dns.TXT:
			if strings.HasSuffix(name, suffix) {
				in := get(name)
				in.txt, in.hasTXT = r.Txt, true
			}
		case *dns.A:
			v4[name] = append(v4[name], r.A)
		case *dns.AAAA:
			v6[name] = append(v6[name], r.AAAA)
		}
	}
	for _, in := range insts {
		if !in.hasSRV || !in.hasTXT {
			continue
		}
		d.report(info, in.txt, in.port, v4[in.target], v6[in.target], "")
	}
}
