package discovery

import (
	"net"
	"regexp"
	"slices"
	"strings"
)

// ifaceInfo is what discovery needs to know of one chosen interface.
type ifaceInfo struct {
	ifi  net.Interface
	nets []*net.IPNet // its addresses with their masks
	key  string       // changes whenever anything above changes
}

// v4 returns the interface's IPv4 addresses.
func (i *ifaceInfo) v4() []net.IP {
	var ips []net.IP
	for _, n := range i.nets {
		if ip4 := n.IP.To4(); ip4 != nil {
			ips = append(ips, ip4)
		}
	}
	return ips
}

// v6LinkLocal returns the interface's IPv6 link-local addresses.
func (i *ifaceInfo) v6LinkLocal() []net.IP {
	var ips []net.IP
	for _, n := range i.nets {
		if n.IP.To4() == nil && n.IP.IsLinkLocalUnicast() {
			ips = append(ips, n.IP)
		}
	}
	return ips
}

// onLink reports whether ip is inside one of the interface's subnets.
func (i *ifaceInfo) onLink(ip net.IP) bool {
	for _, n := range i.nets {
		if n.Contains(ip) {
			return true
		}
	}
	return false
}

// ifaceSource lists the host's interfaces and their addresses; tests may
// replace it.
type ifaceSource interface {
	Interfaces() ([]net.Interface, error)
	Addrs(ifi *net.Interface) ([]net.Addr, error)
}

// osIfaces is the ifaceSource of the running system.
type osIfaces struct{}

func (osIfaces) Interfaces() ([]net.Interface, error)         { return net.Interfaces() }
func (osIfaces) Addrs(ifi *net.Interface) ([]net.Addr, error) { return ifi.Addrs() }

// wanted reports whether ifi should carry mDNS: it must be up and
// multicast-capable, and either match one of res or, when res is empty,
// not be a loopback interface.
func wanted(ifi *net.Interface, res []*regexp.Regexp) bool {
	if ifi.Flags&net.FlagUp == 0 || ifi.Flags&net.FlagMulticast == 0 {
		return false
	}
	if len(res) == 0 {
		return ifi.Flags&net.FlagLoopback == 0
	}
	for _, re := range res {
		if re.MatchString(ifi.Name) {
			return true
		}
	}
	return false
}

// scanIfaces returns the chosen interfaces that have at least one usable
// address, keyed by index.
func scanIfaces(src ifaceSource, res []*regexp.Regexp) (map[int]*ifaceInfo, error) {
	ifs, err := src.Interfaces()
	if err != nil {
		return nil, err
	}
	out := make(map[int]*ifaceInfo)
	for k := range ifs {
		ifi := ifs[k]
		if !wanted(&ifi, res) {
			continue
		}
		addrs, err := src.Addrs(&ifi)
		if err != nil {
			continue // vanished meanwhile; the next scan decides
		}
		info := &ifaceInfo{ifi: ifi}
		var parts []string
		for _, a := range addrs {
			n, ok := a.(*net.IPNet)
			if !ok {
				continue
			}
			if n.IP.To4() == nil && !n.IP.IsLinkLocalUnicast() && !n.IP.IsGlobalUnicast() {
				continue
			}
			info.nets = append(info.nets, n)
			parts = append(parts, n.String())
		}
		if len(info.v4()) == 0 && len(info.v6LinkLocal()) == 0 {
			continue
		}
		slices.Sort(parts)
		info.key = ifi.Name + "|" + ifi.Flags.String() + "|" + strings.Join(parts, ",")
		out[ifi.Index] = info
	}
	return out, nil
}
