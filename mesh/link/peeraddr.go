package link

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"

	"github.com/quicproquo/qpq/mesh/identity"
)

// ErrBadAddress is returned for an address that is not host:port.
var ErrBadAddress = errors.New("bad address")

// PeerAddr is a neighbour to dial: where it listens and the fingerprint it
// must prove, written ADDR#FINGERPRINT.
type PeerAddr struct {
	Addr string // host:port
	FP   identity.Fingerprint
}

// String returns the ADDR#FINGERPRINT form.
func (p PeerAddr) String() string { return p.Addr + "#" + p.FP.String() }

// ParsePeerAddr parses ADDR#FINGERPRINT, e.g.
// "192.0.2.1:7443#abcd...", "[fe80::1%br-mesh]:7443#abcd...".
func ParsePeerAddr(s string) (PeerAddr, error) {
	addr, fp, ok := strings.Cut(s, "#")
	if !ok {
		return PeerAddr{}, fmt.Errorf("%q: want ADDR#FINGERPRINT", s)
	}
	if err := CheckHostPort(addr); err != nil {
		return PeerAddr{}, err
	}
	f, err := identity.ParseFingerprint(fp)
	if err != nil {
		return PeerAddr{}, fmt.Errorf("%q: %w", fp, err)
	}
	return PeerAddr{Addr: addr, FP: f}, nil
}

// CheckHostPort accepts host:port where host is an IP address (with an
// optional IPv6 zone), a host name, or empty (all interfaces), and port is
// 0-65535.
func CheckHostPort(s string) error {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return fmt.Errorf("%w %q: %v", ErrBadAddress, s, err)
	}
	if _, err := strconv.ParseUint(port, 10, 16); err != nil || (port != "0" && strings.HasPrefix(port, "0")) {
		return fmt.Errorf("%w %q: port %q is not a number from 0 to 65535", ErrBadAddress, s, port)
	}
	if host == "" {
		return nil
	}
	if _, err := netip.ParseAddr(host); err == nil {
		return nil
	}
	if strings.Contains(host, ":") || !validHostName(host) {
		return fmt.Errorf("%w %q: %q is neither an IP address nor a host name", ErrBadAddress, s, host)
	}
	return nil
}

func validHostName(h string) bool {
	if len(h) > 253 {
		return false
	}
	for _, label := range strings.Split(strings.TrimSuffix(h, "."), ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for _, c := range label {
			ok := c == '-' || c == '_' || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')
			if !ok {
				return false
			}
		}
	}
	return true
}
