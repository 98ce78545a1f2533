package client

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/quicproquo/qpq/mesh/identity"
	"github.com/quicproquo/qpq/mesh/link"
)

// Candidate is one node a Session may use.
type Candidate struct {
	// Addr is the node's host:port.
	Addr string
	// Pin is the key the node must prove; zero accepts any key (the
	// Session then pins the one that answered for the rest of its life).
	Pin identity.Fingerprint
	// Trusted says the user already trusts this node: given by the user
	// (--node, /mesh server) or remembered from an earlier use. An
	// untrusted candidate (seen by mDNS only: anyone on the Wi-Fi can
	// announce one) is put to SessionConfig.Trust after the dial and
	// before the mailbox authenticates to it.
	Trusted bool
	// Name is what people are shown besides the address ("mdns",
	// "remembered", an mDNS interface...); optional.
	Name string
}

// ParseCandidate parses ADDR[#FINGERPRINT] as a trusted candidate (the
// user typed it).
func ParseCandidate(s string) (Candidate, error) {
	addr, fp, hasFP := strings.Cut(strings.TrimSpace(s), "#")
	if err := link.CheckHostPort(addr); err != nil {
		return Candidate{}, fmt.Errorf("node %q: %w", s, err)
	}
	c := Candidate{Addr: addr, Trusted: true}
	if hasFP {
		p, err := identity.ParseFingerprint(fp)
		if err != nil {
			return Candidate{}, fmt.Errorf("node %q: %w", s, err)
		}
		c.Pin = p
	}
	return c, nil
}

// String is ADDR[#FINGERPRINT], as ParseCandidate reads it.
func (c Candidate) String() string {
	if c.Pin.IsZero() {
		return c.Addr
	}
	return c.Addr + "#" + c.Pin.String()
}

// same reports whether a and b are the same node: the same address, and
// the same key where both are known.
func (c Candidate) same(o Candidate) bool {
	return c.Addr == o.Addr && (c.Pin.IsZero() || o.Pin.IsZero() || c.Pin == o.Pin)
}

// Static returns a candidate provider that always answers list.
func Static(list ...Candidate) func(context.Context) []Candidate {
	list = append([]Candidate(nil), list...)
	return func(context.Context) []Candidate { return list }
}

// ErrNotTrusted is returned (wrapped) when SessionConfig.Trust refused a
// node, and by Get when no candidate is left that is not refused.
var ErrNotTrusted = errors.New("node not trusted")

// ErrNoCandidates is returned by Open when the session has no node to try.
var ErrNoCandidates = errors.New("no node to connect to")
