package link

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/quic-go/quic-go"
)

// Bounds on incoming handshakes (issue 9, defect 16). Each Initial that
// quic-go admits costs a connection with its TLS state and a goroutine
// until the handshake ends or HandshakeTimeout passes, so a flood of
// Initials (spoofed, or from clients that never finish) must not create
// one each. Under load quic-go answers with a stateless Retry, which a
// sender can only complete from an address it really holds; completed
// Retries then count against per-source and node-wide bounds.
const (
	// RetryAbove is how many handshakes from unvalidated addresses may be
	// in progress before every further one must first answer a Retry.
	RetryAbove = 16
	// MaxHandshakes bounds handshakes in progress from validated
	// addresses; past it new ones are refused.
	MaxHandshakes = 64
	// MaxHandshakesPerSource bounds handshakes in progress from one
	// source (an IPv4 address or an IPv6 /64).
	MaxHandshakesPerSource = 16
	// SourceRate and SourceBurst: handshakes a source may start per
	// second without a Retry (token bucket). Retry costs an honest sender
	// one round trip, so this is only a trigger.
	SourceRate  = 20
	SourceBurst = 40
	// SourceDebt is how far below empty validated handshakes may run a
	// source's bucket before more are refused: each full handshake costs
	// the node signatures and key agreement, so one address completing
	// thousands of them (issue 9: 15,000) gets SourceRate a second.
	SourceDebt = 200
	// maxSources bounds the per-source rate buckets remembered.
	maxSources = 1024
)

// errHandshakeBusy is returned from ConnContext to make quic-go refuse
// the connection (CONNECTION_REFUSED) when a bound is reached.
var errHandshakeBusy = errors.New("too many handshakes in progress")

// admission counts handshakes in progress and decides, per Initial,
// whether quic-go should ask for a Retry or refuse. quic-go calls
// retry and connContext from its one packet-handling goroutine; tickets
// are released from others (Accept, the connection's end).
type admission struct {
	now func() time.Time

	mu         sync.Mutex // guards the fields below
	unverified int        // in progress from addresses not validated
	verified   int        // in progress from validated addresses
	perSource  map[netip.Prefix]int
	rate       map[netip.Prefix]*bucket

	seen    atomic.Uint64 // Initials without a token that reached retry
	retries atomic.Uint64 // Initials answered with a Retry
	refused atomic.Uint64 // handshakes refused at a bound
}

type bucket struct {
	tokens float64
	at     time.Time
}

func newAdmission() *admission {
	return &admission{now: time.Now, perSource: map[netip.Prefix]int{}, rate: map[netip.Prefix]*bucket{}}
}

// SourceOf groups addresses by what one party cheaply holds: an IPv4
// address (a /32), or an IPv6 /64 (one subscriber gets a whole /64, so
// counting per address would hand one party millions of shares). Limits
// per source (handshakes here, client slots and quotas in the node) count
// by it. It is the zero Prefix for an address that is not IP.
func SourceOf(a net.Addr) netip.Prefix {
	var ip netip.Addr
	switch a := a.(type) {
	case *net.UDPAddr:
		ip, _ = netip.AddrFromSlice(a.IP)
	default:
		ap, err := netip.ParseAddrPort(a.String())
		if err != nil {
			return netip.Prefix{}
		}
		ip = ap.Addr()
	}
	ip = ip.Unmap()
	if !ip.IsValid() {
		return netip.Prefix{}
	}
	bits := 32
	if ip.Is6() {
		bits = 64
	}
	p, _ := ip.Prefix(bits)
	return p
}

// tokensLocked is src's bucket level at now, without recording it.
func (a *admission) tokensLocked(src netip.Prefix, now time.Time) float64 {
	b := a.rate[src]
	if b == nil {
		return SourceBurst
	}
	return min(SourceBurst, b.tokens+now.Sub(b.at).Seconds()*SourceRate)
}

// retry is Transport.VerifySourceAddress: true makes quic-go answer the
// Initial with a Retry (no state kept) instead of starting a handshake.
// The address is unvalidated here, so nothing is recorded for it.
func (a *admission) retry(addr net.Addr) bool {
	a.seen.Add(1)
	src := SourceOf(addr)
	a.mu.Lock()
	defer a.mu.Unlock()
	r := a.unverified >= RetryAbove || a.perSource[src] >= MaxHandshakesPerSource/2 ||
		a.tokensLocked(src, a.now()) < 1 || (a.rate[src] == nil && len(a.rate) >= maxSources)
	if r {
		a.retries.Add(1)
	}
	return r
}

type ticketKey struct{}

// ticket is one handshake counted in progress; release is idempotent.
type ticket struct {
	a        *admission
	src      netip.Prefix
	verified bool
	once     sync.Once
}

func (t *ticket) release() {
	t.once.Do(func() {
		a := t.a
		a.mu.Lock()
		defer a.mu.Unlock()
		if t.verified {
			a.verified--
		} else {
			a.unverified--
		}
		if a.perSource[t.src]--; a.perSource[t.src] <= 0 {
			delete(a.perSource, t.src)
		}
	})
}

// connContext is Transport.ConnContext: it counts the handshake, or
// refuses it at a bound. The count ends when the connection is accepted
// (its handshake done) or ends, whichever comes first.
func (a *admission) connContext(ctx context.Context, info *quic.ClientInfo) (context.Context, error) {
	src := SourceOf(info.RemoteAddr)
	now := a.now()
	a.mu.Lock()
	n := &a.verified
	limit := MaxHandshakes
	if !info.AddrVerified {
		// retry let it through, so this is below RetryAbove; the bound
		// here only guards against a caller that skipped retry.
		n, limit = &a.unverified, RetryAbove
	}
	if *n >= limit || a.perSource[src] >= MaxHandshakesPerSource || a.tokensLocked(src, now) < 1-SourceDebt {
		a.mu.Unlock()
		a.refused.Add(1)
		return nil, errHandshakeBusy
	}
	*n++
	a.perSource[src]++
	a.takeLocked(src, now)
	a.mu.Unlock()
	t := &ticket{a: a, src: src, verified: info.AddrVerified}
	context.AfterFunc(ctx, t.release)
	return context.WithValue(ctx, ticketKey{}, t), nil
}

// takeLocked spends one of src's tokens. A validated sender may go below
// zero, down to -SourceDebt; meanwhile its unvalidated Initials get Retry.
func (a *admission) takeLocked(src netip.Prefix, now time.Time) {
	b := a.rate[src]
	if b == nil {
		if len(a.rate) >= maxSources {
			a.pruneLocked(now)
		}
		if len(a.rate) >= maxSources {
			return // retry asks every untracked source for a Retry meanwhile
		}
		b = &bucket{tokens: SourceBurst, at: now}
		a.rate[src] = b
	}
	b.tokens = a.tokensLocked(src, now) - 1
	b.at = now
}

// pruneLocked forgets buckets that have refilled: they mean the same as
// none.
func (a *admission) pruneLocked(now time.Time) {
	for src := range a.rate {
		if a.tokensLocked(src, now) >= SourceBurst {
			delete(a.rate, src)
		}
	}
}

// accepted ends the count for a connection the application took.
func accepted(conn *quic.Conn) {
	if t, ok := conn.Context().Value(ticketKey{}).(*ticket); ok {
		t.release()
	}
}

// inProgress reports the handshakes counted now (tests, status).
func (a *admission) inProgress() (unverified, verified int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.unverified, a.verified
}

// HandshakeStats describes incoming handshakes since Listen.
type HandshakeStats struct {
	InProgress int    // counted now (validated or not), until accepted or ended
	Retries    uint64 // Initials answered with a Retry
	Refused    uint64 // handshakes refused at a bound
}

// HandshakeStats reports the handshake bounds at work (zero for a
// transport that does not listen), for status output and logs.
func (t *Transport) HandshakeStats() HandshakeStats {
	if t.adm == nil {
		return HandshakeStats{}
	}
	unv, ver := t.adm.inProgress()
	return HandshakeStats{InProgress: unv + ver, Retries: t.adm.retries.Load(), Refused: t.adm.refused.Load()}
}
