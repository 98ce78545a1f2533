package daemon

import (
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/quicproquo/qpq/mesh/link"
)

// Limits on client connections, so that one address (or a few) cannot
// take every slot or every goroutine of the node.
const (
	maxClientsPerAddr = 8  // connections from one IPv4 address or IPv6 /64
	maxCallsPerConn   = 16 // calls in flight (not yet answered on the wire)
	maxCallsPerAddr   = 32
	maxCallsTotal     = 256 // over every client: past it fetches are refused
	maxWaitsPerConn   = 4   // long polls waiting at once
	maxWaitsPerAddr   = 8
	answerTimeout     = 30 * time.Second // an answer unwritten this long closes the connection
)

// clientIdleTimeout closes a client connection with no call in progress
// for this long (a waiting long poll is a call in progress). A variable
// for tests.
var clientIdleTimeout = 2 * time.Minute

// clientKey is the per-address key of a client: its IPv4 address, or the
// /64 of its IPv6 address (link.SourceOf, the grouping the handshake
// bounds use too).
func clientKey(a net.Addr) string {
	p := link.SourceOf(a)
	switch {
	case !p.IsValid():
		return a.String()
	case p.Addr().Is4():
		return p.Addr().String()
	}
	return p.String()
}

// clientConn is one admitted client connection.
type clientConn struct {
	in   *link.Incoming
	key  string
	addr *addrState

	active atomic.Int32 // calls in progress
	last   atomic.Int64 // UnixNano when a call last started or ended
	waits  atomic.Int32 // long polls waiting
}

// begin marks a call in progress; the returned func ends it.
func (c *clientConn) begin() func() {
	c.active.Add(1)
	c.last.Store(time.Now().UnixNano())
	return func() {
		c.last.Store(time.Now().UnixNano())
		c.active.Add(-1)
	}
}

// idle reports how long c has had no call in progress (0 when one is).
func (c *clientConn) idle(now time.Time) time.Duration {
	if c.active.Load() > 0 {
		return 0
	}
	return now.Sub(time.Unix(0, c.last.Load()))
}

// errTooManyWaits refuses a long poll past the caps.
var errTooManyWaits = errors.New("too many waiting fetches from this connection or address; wait on fewer at once")

// startWait counts a long poll against the connection and its address;
// the returned func ends it.
func (c *clientConn) startWait() (func(), error) {
	if c.waits.Add(1) > maxWaitsPerConn {
		c.waits.Add(-1)
		return nil, fmt.Errorf("%w (at most %d per connection)", errTooManyWaits, maxWaitsPerConn)
	}
	if c.addr.waits.Add(1) > maxWaitsPerAddr {
		c.addr.waits.Add(-1)
		c.waits.Add(-1)
		return nil, fmt.Errorf("%w (at most %d per address)", errTooManyWaits, maxWaitsPerAddr)
	}
	return func() {
		c.addr.waits.Add(-1)
		c.waits.Add(-1)
	}, nil
}

// addrState is what every connection from one address shares.
type addrState struct {
	conns int          // guarded by clientTable.mu
	calls atomic.Int64 // calls in flight, counted by the RPC codec
	waits atomic.Int32
}

// clientTable admits client connections: at most max in all and
// maxClientsPerAddr from one address; when full, the connection idle the
// longest makes room.
type clientTable struct {
	max   int
	calls atomic.Int64 // calls in flight over every client connection

	mu    sync.Mutex
	conns map[*clientConn]struct{}
	addrs map[string]*addrState
}

func newClientTable(max int) *clientTable {
	return &clientTable{max: max, conns: map[*clientConn]struct{}{}, addrs: map[string]*addrState{}}
}

// admit registers in, evicting the longest-idle connection when every
// slot is taken. It returns an error saying why in is refused.
func (t *clientTable) admit(in *link.Incoming) (*clientConn, error) {
	key := clientKey(in.RemoteAddr())
	now := time.Now()
	t.mu.Lock()
	as := t.addrs[key]
	if as != nil && as.conns >= maxClientsPerAddr {
		t.mu.Unlock()
		return nil, fmt.Errorf("too many connections from %s (at most %d)", key, maxClientsPerAddr)
	}
	var victim *clientConn
	if len(t.conns) >= t.max {
		var longest time.Duration
		for c := range t.conns {
			if d := c.idle(now); d > longest {
				victim, longest = c, d
			}
		}
		if victim == nil {
			t.mu.Unlock()
			return nil, errors.New("too many clients, all busy")
		}
		t.removeLocked(victim)
	}
	if as == nil {
		as = &addrState{}
		t.addrs[key] = as
	}
	as.conns++
	c := &clientConn{in: in, key: key, addr: as}
	c.last.Store(now.UnixNano())
	t.conns[c] = struct{}{}
	t.mu.Unlock()
	if victim != nil {
		victim.in.Refuse("node full: idle connection closed for a new one")
	}
	return c, nil
}

// release forgets c; safe for a connection already evicted.
func (t *clientTable) release(c *clientConn) {
	t.mu.Lock()
	t.removeLocked(c)
	t.mu.Unlock()
}

func (t *clientTable) removeLocked(c *clientConn) {
	if _, ok := t.conns[c]; !ok {
		return
	}
	delete(t.conns, c)
	if as := t.addrs[c.key]; as != nil {
		if as.conns--; as.conns <= 0 {
			delete(t.addrs, c.key)
		}
	}
}

// closeAll closes every client connection with a reason the client can
// show, so it learns at once that the node went away rather than at its
// next probe. Called by Daemon.Close before the socket closes.
func (t *clientTable) closeAll(reason string) {
	t.mu.Lock()
	conns := make([]*clientConn, 0, len(t.conns))
	for c := range t.conns {
		conns = append(conns, c)
	}
	t.mu.Unlock()
	for _, c := range conns {
		c.in.Close(link.CodeClosing, reason)
	}
}

// callLimits are the RPC limits of c.
func (t *clientTable) callLimits(c *clientConn) link.CallLimits {
	return link.CallLimits{MaxCalls: maxCallsPerConn, Shared: &c.addr.calls, MaxShared: maxCallsPerAddr,
		Total: &t.calls, WriteTimeout: answerTimeout}
}

// errBusy refuses a fetch while clients have too many calls in flight:
// each answer may carry fetchBytes.
var errBusy = errors.New("node busy: too many client calls in flight, try again shortly")

// busy reports whether fetches are refused for now.
func (t *clientTable) busy() bool { return t.calls.Load() > maxCallsTotal }
