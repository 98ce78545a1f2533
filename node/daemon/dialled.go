package daemon

// Dialled links: short-lived connections to nodes that are not
// neighbours, made to push a few envelopes straight to them (a DM to its
// mailbox nodes; later the onion relays). They use their own ALPN
// (link.ALPNDial), so the receiver can tell them from a neighbour before
// hello: neither side puts them in the neighbour table, counts them
// against --max-links or the inbound cap, or registers them with the relay
// engine (no fan-out of every envelope, no summaries over them). Pushes
// arriving on one go through the same wire.Server and the engine's
// admission (relay.Source names the dialler), under a rate bucket of
// their own, since the engine rate-limits only the neighbours it knows.
//
// The pool is bounded (DialledOptions.Max, least recently used idle link
// evicted, else refused with ErrDialledFull), each link is closed after
// DialledOptions.Idle without a push by the pool's owner goroutine, every
// dial has a deadline, and a target whose dial failed is refused with
// ErrDialFailed until DialledOptions.RetryAfter has passed, so no caller
// can make the node dial in a loop.

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/quicproquo/qpq/gossip"
	"github.com/quicproquo/qpq/gossip/relay"
	"github.com/quicproquo/qpq/gossip/wire"
	"github.com/quicproquo/qpq/mesh/descriptor"
	"github.com/quicproquo/qpq/mesh/identity"
	"github.com/quicproquo/qpq/mesh/link"
)

// Defaults of DialledOptions.
const (
	DefaultMaxDialled        = 8
	DefaultDialledIdle       = 30 * time.Second
	DefaultDialledRetryAfter = time.Minute
	DefaultMaxDialledIn      = 32
)

const (
	// dialledPushTimeout bounds a push whose caller set no deadline.
	dialledPushTimeout = 30 * time.Second
	// maxDialFailures bounds the failed targets remembered.
	maxDialFailures = 256
	// Defaults of DialledOptions.InRate and InBurst: a neighbour's rate
	// (relay.Options.PeerRate), a burst of two full pushes.
	dialledRate  = 200
	dialledBurst = 2 * relay.MaxPush
	// minSweep is the shortest pause of the owner goroutine.
	minSweep = 10 * time.Millisecond
)

// Errors PushTo returns (wrapped, with the target named).
var (
	// ErrDialledFull: every dialled link is busy, none could be evicted.
	ErrDialledFull = errors.New("every dialled link is in use")
	// ErrDialFailed: the last dial to the target failed, too recently to
	// dial it again.
	ErrDialFailed = errors.New("a recent dial to this node failed")
	// ErrNoAddress: no open link to the target and no address to dial.
	ErrNoAddress = errors.New("no address to dial")
	// ErrDialledClosed: the node is shutting down.
	ErrDialledClosed = errors.New("node shutting down")
)

// errDialledPushOnly answers summary and raise on a dialled link: it
// carries pushes only.
var errDialledPushOnly = errors.New("not served on a dialled link (pushes only)")

// DialledOptions bound the pool of dialled links. A zero field takes its
// default.
type DialledOptions struct {
	// Max is how many dialled links (and dials in progress) the node
	// holds at once. Default 8.
	Max int
	// Idle is how long a dialled link stays open without a push. Default
	// 30 s. The receiving side closes an inbound one after twice its own.
	Idle time.Duration
	// DialTimeout bounds one dial, every address of the target included.
	// Default 10 s.
	DialTimeout time.Duration
	// RetryAfter is how long a target whose dial failed is refused
	// before it is dialled again. Default 1 minute.
	RetryAfter time.Duration
	// MaxInbound is how many dialled links from other nodes the node
	// accepts at once. Default 32.
	MaxInbound int
	// InRate and InBurst bound the envelopes accepted per second over
	// one inbound dialled link (token bucket). Defaults 200, as a
	// neighbour's, and 512 (two full pushes).
	InRate, InBurst float64
}

func (o DialledOptions) withDefaults() DialledOptions {
	if o.Max <= 0 {
		o.Max = DefaultMaxDialled
	}
	if o.Idle <= 0 {
		o.Idle = DefaultDialledIdle
	}
	if o.DialTimeout <= 0 {
		o.DialTimeout = dialTimeout
	}
	if o.RetryAfter <= 0 {
		o.RetryAfter = DefaultDialledRetryAfter
	}
	if o.MaxInbound <= 0 {
		o.MaxInbound = DefaultMaxDialledIn
	}
	if o.InRate <= 0 {
		o.InRate = dialledRate
	}
	if o.InBurst <= 0 {
		o.InBurst = dialledBurst
	}
	return o
}

// DialledStats counts the dialled links held.
type DialledStats struct {
	Out      int // open links this node dialled
	Dialling int // dials in progress
	In       int // links other nodes dialled to this one
}

// dialPool holds both directions of dialled links.
type dialPool struct {
	kick chan struct{} // wakes the owner goroutine when options change

	mu     sync.Mutex // guards the fields below
	o      DialledOptions
	out    map[identity.Fingerprint]*dialEntry
	failed map[identity.Fingerprint]time.Time // when each failed target may be dialled again
	in     map[*inDialled]struct{}
	closed bool

	wg sync.WaitGroup // dial goroutines
}

// dialEntry is one outbound dialled link, or the dial that makes it.
type dialEntry struct {
	fp    identity.Fingerprint
	ready chan struct{} // closed when the dial ends
	l     *link.Link    // set (or err) before ready closes
	err   error

	// Guarded by dialPool.mu.
	busy    int // callers waiting for the dial or pushing: never evicted
	lastUse time.Time
}

// inDialled is one inbound dialled link.
type inDialled struct {
	fp          identity.Fingerprint
	rate, burst float64

	mu      sync.Mutex // guards the fields below
	l       *link.Link // nil until hello is over
	lastUse time.Time
	tokens  float64
	last    time.Time
}

func newDialPool() *dialPool {
	return &dialPool{
		kick:   make(chan struct{}, 1),
		o:      DialledOptions{}.withDefaults(),
		out:    map[identity.Fingerprint]*dialEntry{},
		failed: map[identity.Fingerprint]time.Time{},
		in:     map[*inDialled]struct{}{},
	}
}

// SetDialled replaces the dialled-link options (zero fields: defaults).
// It may be called at any time: links already open stay until idle.
func (d *Daemon) SetDialled(o DialledOptions) {
	p := d.dialled
	p.mu.Lock()
	p.o = o.withDefaults()
	p.mu.Unlock()
	select {
	case p.kick <- struct{}{}:
	default:
	}
}

// Dialled counts the dialled links held now.
func (d *Daemon) Dialled() DialledStats {
	p := d.dialled
	p.mu.Lock()
	defer p.mu.Unlock()
	var s DialledStats
	for _, e := range p.out {
		switch {
		case e.l == nil:
			s.Dialling++
		case !ended(e.l): // one the other side closed is swept later
			s.Out++
		}
	}
	s.In = len(p.in)
	return s
}

// PushTo pushes envs to the node fp and returns its answer: how many it
// newly stored and, when it paces us (flow control), how many it took
// and when to send the rest.
// A neighbour link to fp is used when there is one; otherwise an open
// dialled link, or a new one dialled to addrs (tried in turn, pinned to
// fp, within DialledOptions.DialTimeout). At most relay.MaxPush
// envelopes. A node older than link.ALPNDial refuses the dial's TLS
// handshake (no application protocol): PushTo fails and that target is
// not dialled again before DialledOptions.RetryAfter.
func (d *Daemon) PushTo(ctx context.Context, fp identity.Fingerprint, addrs []string, envs []gossip.Envelope) (relay.PushResult, error) {
	if fp.Equal(d.id.Fingerprint()) {
		return relay.PushResult{}, errors.New("push to self: not a remote node")
	}
	if len(envs) == 0 {
		return relay.PushResult{}, nil
	}
	if len(envs) > relay.MaxPush {
		return relay.PushResult{}, fmt.Errorf("push to %s: %d envelopes, at most %d", fp, len(envs), relay.MaxPush)
	}
	var res relay.PushResult
	err := d.callTo(ctx, fp, addrs, func(ctx context.Context, p wire.Peer) error {
		var err error
		res, err = p.Push(ctx, envs)
		return err
	})
	if err != nil {
		return relay.PushResult{}, fmt.Errorf("push to %w", err)
	}
	return res, nil
}

// pushContext bounds a push: by the caller's deadline or
// dialledPushTimeout, and by the node's life.
func (d *Daemon) pushContext(ctx context.Context) (context.Context, context.CancelFunc) {
	var cancelT context.CancelFunc = func() {}
	if _, ok := ctx.Deadline(); !ok {
		ctx, cancelT = context.WithTimeout(ctx, dialledPushTimeout)
	}
	ctx, cancel := context.WithCancel(ctx)
	stop := context.AfterFunc(d.ctx, cancel)
	return ctx, func() {
		stop()
		cancel()
		cancelT()
	}
}

func ended(l *link.Link) bool {
	select {
	case <-l.Done():
		return true
	default:
		return false
	}
}

// acquire returns an open dialled link to fp, dialling one if needed,
// counted busy until release. reused says the link was open already.
func (p *dialPool) acquire(ctx context.Context, d *Daemon, fp identity.Fingerprint, addrs []string) (e *dialEntry, reused bool, err error) {
	now := time.Now()
	var closing []*link.Link // closed outside mu
	defer func() {
		for _, l := range closing {
			l.Close(link.CodeClosing, "dialled link evicted or ended")
		}
	}()
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil, false, fmt.Errorf("%s: %w", fp, ErrDialledClosed)
	}
	e = p.out[fp]
	if e != nil && e.l != nil && ended(e.l) {
		// Closed by the other side: dial again. Callers still pushing
		// on it hold e and release it outside the pool.
		delete(p.out, fp)
		closing = append(closing, e.l)
		e = nil
	}
	if e != nil {
		reused = e.l != nil
	} else {
		if until, ok := p.failed[fp]; ok && now.Before(until) {
			p.mu.Unlock()
			return nil, false, fmt.Errorf("%s: %w (dialled again in %v)", fp, ErrDialFailed, until.Sub(now).Round(time.Second))
		}
		delete(p.failed, fp)
		if len(addrs) == 0 {
			p.mu.Unlock()
			return nil, false, fmt.Errorf("%s: %w", fp, ErrNoAddress)
		}
		if len(p.out) >= p.o.Max {
			// Links the other side closed free their slots first.
			for f, o := range p.out {
				if o.l != nil && ended(o.l) {
					delete(p.out, f)
					closing = append(closing, o.l)
				}
			}
		}
		if len(p.out) >= p.o.Max {
			v := p.lruIdleLocked()
			if v == nil {
				p.mu.Unlock()
				return nil, false, fmt.Errorf("%s: %w (%d held)", fp, ErrDialledFull, p.o.Max)
			}
			delete(p.out, v.fp)
			closing = append(closing, v.l)
		}
		e = &dialEntry{fp: fp, ready: make(chan struct{}), lastUse: now}
		p.out[fp] = e
		p.wg.Add(1)
		go p.dial(d, e, slices.Clone(addrs[:min(len(addrs), descriptor.MaxAddrs)]), p.o.DialTimeout, p.o.RetryAfter)
	}
	e.busy++
	p.mu.Unlock()
	select {
	case <-e.ready:
	case <-ctx.Done():
		p.release(e)
		return nil, false, fmt.Errorf("%s: waiting for the dial: %w", fp, ctx.Err())
	}
	if e.err != nil {
		p.release(e)
		return nil, false, e.err
	}
	return e, reused, nil
}

func closeDialled(l *link.Link, reason string) {
	if l != nil {
		l.Close(link.CodeClosing, reason)
	}
}

// lruIdleLocked returns the open link pushed over least recently that
// nobody is using, or nil.
func (p *dialPool) lruIdleLocked() *dialEntry {
	var v *dialEntry
	for _, e := range p.out {
		if e.l != nil && e.busy == 0 && (v == nil || e.lastUse.Before(v.lastUse)) {
			v = e
		}
	}
	return v
}

func (p *dialPool) release(e *dialEntry) {
	p.mu.Lock()
	e.busy--
	e.lastUse = time.Now()
	p.mu.Unlock()
}

// dial makes e's link: each address in turn, all within timeout. A
// failure is remembered so that the target is refused for retryAfter.
func (p *dialPool) dial(d *Daemon, e *dialEntry, addrs []string, timeout, retryAfter time.Duration) {
	defer p.wg.Done()
	ctx, cancel := context.WithTimeout(d.ctx, timeout)
	defer cancel()
	var l *link.Link
	var errs []error
	for _, a := range addrs {
		var err error
		if l, err = d.dialDialled(ctx, a, e.fp); err == nil {
			break
		}
		errs = append(errs, fmt.Errorf("%s: %w", a, err))
		if ctx.Err() != nil {
			break
		}
	}
	now := time.Now()
	p.mu.Lock()
	switch {
	case l == nil:
		e.err = fmt.Errorf("%s: dial: %w", e.fp, errors.Join(errs...))
		if p.out[e.fp] == e {
			delete(p.out, e.fp)
		}
		p.rememberFailureLocked(e.fp, now.Add(retryAfter), now)
		d.log.Debug("dialled link not made", "peer", e.fp, "err", e.err)
	case p.closed || p.out[e.fp] != e:
		e.err = fmt.Errorf("%s: %w", e.fp, ErrDialledClosed)
	default:
		e.l, e.lastUse = l, now
		l = nil
		d.log.Debug("dialled link up", "peer", e.fp, "addr", e.l.RemoteAddr())
	}
	close(e.ready)
	p.mu.Unlock()
	closeDialled(l, "node shutting down")
}

// rememberFailureLocked records a failed target, bounded: expired entries
// go first, then any one.
func (p *dialPool) rememberFailureLocked(fp identity.Fingerprint, until, now time.Time) {
	if len(p.failed) >= maxDialFailures {
		for f, u := range p.failed {
			if !now.Before(u) {
				delete(p.failed, f)
			}
		}
		for f := range p.failed {
			if len(p.failed) < maxDialFailures {
				break
			}
			delete(p.failed, f)
		}
	}
	p.failed[fp] = until
}

// dialDialled dials one address of fp over link.ALPNDial. What we offer
// the other side serves hello and health only: it has no reason to push
// to us over a link we made to push to it.
func (d *Daemon) dialDialled(ctx context.Context, addr string, fp identity.Fingerprint) (*link.Link, error) {
	conn, err := d.tr.Dial(ctx, addr, fp, link.ALPNDial)
	if err != nil {
		return nil, err
	}
	boot := wire.NewServer(fp, wire.ServerOptions{Local: d.hello, Stats: d.stats, Log: d.log}).Client()
	return link.Establish(ctx, conn, true, boot, d.hello, d.log)
}

// run is the pool's owner goroutine: it closes links idle too long (and
// drops those the other side closed) until ctx ends.
func (p *dialPool) run(ctx context.Context) {
	for {
		p.mu.Lock()
		pause := max(p.o.Idle/4, minSweep)
		p.mu.Unlock()
		t := time.NewTimer(pause)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-p.kick:
			t.Stop()
		case <-t.C:
		}
		p.sweep(time.Now())
	}
}

func (p *dialPool) sweep(now time.Time) {
	var idle, gone []*link.Link
	p.mu.Lock()
	for fp, e := range p.out {
		if e.l == nil {
			continue
		}
		if ended(e.l) {
			gone = append(gone, e.l)
			delete(p.out, fp)
		} else if e.busy == 0 && now.Sub(e.lastUse) >= p.o.Idle {
			idle = append(idle, e.l)
			delete(p.out, fp)
		}
	}
	inIdle := 2 * p.o.Idle
	var inbound []*inDialled
	for in := range p.in {
		inbound = append(inbound, in)
	}
	p.mu.Unlock()
	for _, l := range idle {
		l.Close(link.CodeClosing, "dialled link idle")
	}
	for _, l := range gone {
		l.Close(link.CodeClosing, "dialled link ended")
	}
	for _, in := range inbound {
		in.mu.Lock()
		l, last := in.l, in.lastUse
		in.mu.Unlock()
		if l != nil && now.Sub(last) >= inIdle {
			// Its goroutine in acceptDialled sees Done and cleans up.
			l.Abort(link.CodeClosing, "dialled link idle")
		}
	}
}

// close ends every dialled link both ways and waits for the dials in
// progress (d.ctx is cancelled already, so they end at once).
func (p *dialPool) close() {
	p.mu.Lock()
	p.closed = true
	var ls []*link.Link
	for fp, e := range p.out {
		if e.l != nil {
			ls = append(ls, e.l)
		}
		delete(p.out, fp)
	}
	var inbound []*inDialled
	for in := range p.in {
		inbound = append(inbound, in)
	}
	p.mu.Unlock()
	for _, l := range ls {
		l.Close(link.CodeClosing, "node shutting down")
	}
	for _, in := range inbound {
		in.mu.Lock()
		l := in.l
		in.mu.Unlock()
		if l != nil {
			l.Abort(link.CodeClosing, "node shutting down")
		}
	}
	p.wg.Wait()
}

// inRoom reports whether another inbound dialled link fits.
func (p *dialPool) inRoom() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return !p.closed && len(p.in) < p.o.MaxInbound
}

// addIn registers an inbound dialled link whose hello is over, unless
// the node is closing or at its bound.
func (p *dialPool) addIn(in *inDialled, l *link.Link) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed || len(p.in) >= p.o.MaxInbound {
		return false
	}
	in.mu.Lock()
	in.l, in.lastUse = l, time.Now()
	in.mu.Unlock()
	p.in[in] = struct{}{}
	return true
}

func (p *dialPool) removeIn(in *inDialled) {
	p.mu.Lock()
	delete(p.in, in)
	p.mu.Unlock()
}

// acceptDialled runs hello on an inbound dialled connection and holds it
// until it ends, idles out or the node closes. It is never a neighbour:
// not in d.links, not counted by inboundAllowed, not given to the engine.
func (d *Daemon) acceptDialled(conn *link.Incoming, release func()) {
	fp, err := conn.PeerFingerprint()
	if err != nil {
		release()
		conn.Refuse(err.Error())
		return
	}
	if fp.Equal(d.id.Fingerprint()) || !d.dialled.inRoom() {
		release()
		conn.Refuse("too many dialled links")
		d.log.Debug("refused dialled link", "peer", fp)
		return
	}
	p := d.dialled
	p.mu.Lock()
	rate, burst := p.o.InRate, p.o.InBurst
	p.mu.Unlock()
	in := &inDialled{fp: fp, rate: rate, burst: burst, tokens: burst, last: time.Now()}
	srv := wire.NewServer(fp, wire.ServerOptions{
		Local:     d.hello,
		Stats:     d.stats,
		Handler:   dialledHandler{d: d, in: in},
		Mailboxes: mailboxes{d: d, in: in},
		Onions:    onionFrom{r: d.onion, in: in},
		Log:       d.log,
		Drop: func(reason string) {
			in.mu.Lock()
			l := in.l
			in.mu.Unlock()
			if l != nil {
				l.Abort(link.CodeRefused, reason)
			} else {
				conn.Refuse(reason)
			}
		},
	})
	ctx, cancel := context.WithTimeout(d.ctx, inboundHelloTimeout)
	l, err := conn.Establish(ctx, srv.Client(), d.hello, d.log)
	cancel()
	release()
	if err != nil {
		d.log.Debug("refused dialled link", "addr", conn.RemoteAddr(), "err", err)
		return
	}
	if !d.dialled.addIn(in, l) {
		l.Close(link.CodeRefused, "too many dialled links")
		return
	}
	defer d.dialled.removeIn(in)
	d.log.Debug("dialled link in", "peer", fp, "addr", l.RemoteAddr())
	select {
	case <-l.Done():
	case <-d.ctx.Done():
	}
	l.Close(link.CodeClosing, "dialled link closed")
}

// take spends up to n tokens of the link's bucket and returns how many
// it got; when fewer, wait is how long until the next one.
func (in *inDialled) take(n int) (got int, wait time.Duration) {
	now := time.Now()
	in.mu.Lock()
	defer in.mu.Unlock()
	in.tokens = min(in.burst, in.tokens+now.Sub(in.last).Seconds()*in.rate)
	in.last, in.lastUse = now, now
	got = min(n, int(in.tokens))
	in.tokens -= float64(got)
	if got < n {
		wait = time.Duration((1 - in.tokens) / in.rate * float64(time.Second))
	}
	return got, wait
}

// dialledHandler takes the calls of an inbound dialled link: pushes into
// the engine under the link's own rate bucket; no summary, no raise.
type dialledHandler struct {
	d  *Daemon
	in *inDialled
}

// AcceptPush spends tokens of the link's bucket, one per envelope, and
// admits what they cover as the engine admits a neighbour's push (the
// dialler is not a registered neighbour, so the engine's own buckets do
// not apply; src names the dialler: its store quota). The rest is
// answered as the engine answers a neighbour over its rate.
func (h dialledHandler) AcceptPush(from identity.Fingerprint, envs []gossip.Envelope, flow bool) (relay.PushResult, error) {
	n, wait := h.in.take(len(envs))
	res, err := h.d.eng.AcceptPush(from, envs[:n], flow)
	if err != nil {
		return res, err
	}
	if n < len(envs) {
		if !flow {
			return res, relay.ErrRateLimited
		}
		res.Taken, res.RetryAfter = n, max(wait, time.Millisecond)
	}
	return res, nil
}

// HandleSummary refuses: anti-entropy is for neighbours.
func (h dialledHandler) HandleSummary(identity.Fingerprint, relay.Summary) error {
	return fmt.Errorf("summary: %w", errDialledPushOnly)
}

// HandleRaise refuses: hop raises are for neighbours.
func (h dialledHandler) HandleRaise(identity.Fingerprint, []relay.HopRaise) error {
	return errDialledPushOnly
}
