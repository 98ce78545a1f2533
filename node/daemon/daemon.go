// Package daemon is the qpq node: it owns the node identity, the QUIC
// transport, the links to neighbours (static peers now; discovery later),
// the client-facing service and the control socket, and shuts them all
// down together.
package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sort"
	"sync"
	"time"

	"capnproto.org/go/capnp/v3"
	"github.com/quic-go/quic-go"

	"github.com/quicproquo/qpq/gossip"
	"github.com/quicproquo/qpq/gossip/relay"
	"github.com/quicproquo/qpq/gossip/store"
	"github.com/quicproquo/qpq/gossip/wire"
	"github.com/quicproquo/qpq/mesh/discovery"
	"github.com/quicproquo/qpq/mesh/identity"
	"github.com/quicproquo/qpq/mesh/link"
	"github.com/quicproquo/qpq/mesh/neighbours"
	"github.com/quicproquo/qpq/node/buildinfo"
	"github.com/quicproquo/qpq/node/config"
	"github.com/quicproquo/qpq/node/control"
	"github.com/quicproquo/qpq/schemas"
)

// Limits that keep a flood of connections from growing memory.
const (
	maxPendingHandshakes = 32 // inbound connections still in hello
	maxClients           = 64 // client connections held at once
	probeInterval        = 10 * time.Second
	probeTimeout         = 10 * time.Second
	dialTimeout          = 10 * time.Second
	minRedial            = time.Second
	maxRedial            = time.Minute
)

// Daemon is a running node. Create it with New, run it with Run, stop it
// by cancelling Run's context or calling Close.
type Daemon struct {
	cfg     config.Config
	log     *slog.Logger
	id      *identity.Node
	tr      *link.Transport
	ctl     *control.Server
	st      *store.Store
	eng     *relay.Engine
	hello   link.Hello
	started time.Time

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	pending chan struct{} // semaphore: inbound handshakes in progress
	clients chan struct{} // semaphore: client connections

	disc *discovery.Discovery // nil when mDNS is off

	table *neighbours.Table // nodes learnt by mDNS and peer exchange
	kick  chan struct{}     // wakes selectLoop

	mu        sync.Mutex // guards the fields below
	links     map[identity.Fingerprint]*link.Link
	via       map[identity.Fingerprint]string // how each link came to be
	dialing   map[identity.Fingerprint]bool   // learnt nodes being dialled: true for random picks
	anchor    map[identity.Fingerprint]bool   // links that are random picks
	capWarned time.Time                       // last inbound-cap warning (one a minute)
	trial     identity.Fingerprint            // a link dialled to compare its RTT
	lastTrial time.Time

	closeOnce sync.Once
}

// New loads (or creates) the identity in cfg.DataDir, binds cfg.Listen and
// opens the control socket. Nothing runs until Run.
func New(cfg config.Config, log *slog.Logger) (*Daemon, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	id, created, err := identity.LoadOrCreateNode(cfg.DataDir)
	if err != nil {
		return nil, fmt.Errorf("node identity: %w", err)
	}
	if created {
		log.Info("created node identity", "dir", cfg.DataDir, "fingerprint", id.Fingerprint())
	}
	return newWithIdentity(cfg, id, log)
}

// NewWithIdentity is New with an identity held in memory (selftest).
func NewWithIdentity(cfg config.Config, id *identity.Node, log *slog.Logger) (*Daemon, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return newWithIdentity(cfg, id, log)
}

func newWithIdentity(cfg config.Config, id *identity.Node, log *slog.Logger) (*Daemon, error) {
	// The store's default shares: receipts, bundles and descriptors have
	// budgets of their own; one source (a client's address or a link) may
	// hold an eighth of the messages, a mailbox a quarter of the store and
	// one source a quarter of a mailbox (store.PerSourceShare), each
	// budget shared fairly once half full: no one source can starve the
	// others.
	st, err := store.Open(cfg.Store, store.Options{
		MaxBytes: cfg.StoreMaxBytes,
		MaxTTL:   cfg.MaxTTL,
		MaxHops:  uint8(min(cfg.MaxHops, config.HardMaxHops)),
		Logger:   log,
	})
	if err != nil {
		return nil, err
	}
	tr, err := link.Listen(cfg.Listen, id)
	if err != nil {
		st.Close()
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	d := &Daemon{
		cfg:     cfg,
		log:     log,
		id:      id,
		tr:      tr,
		st:      st,
		hello:   link.LocalHello(buildinfo.String(), cfg.Domain),
		started: time.Now(),
		ctx:     ctx,
		cancel:  cancel,
		pending: make(chan struct{}, maxPendingHandshakes),
		clients: make(chan struct{}, maxClients),
		links:   map[identity.Fingerprint]*link.Link{},
		via:     map[identity.Fingerprint]string{},
		dialing: map[identity.Fingerprint]bool{},
		anchor:  map[identity.Fingerprint]bool{},
		table:   neighbours.NewTable(maxCandidates, rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64()))),
		kick:    make(chan struct{}, 1),
	}
	// The first trial comes a full Explore after start, not at once.
	d.lastTrial = d.started
	d.eng = relay.New(relay.Options{Store: st, VerifyBundle: verifyBundle, VerifyDescriptor: verifyDescriptor,
		OnDescriptor: d.onDescriptor, Log: log, ReceiptHops: uint8(min(cfg.MaxHops, 16))})
	if cfg.Control != "" {
		d.ctl, err = control.Listen(cfg.Control, d.Status, log)
		if err != nil {
			cancel()
			d.eng.Close()
			tr.Close()
			st.Close()
			return nil, err
		}
	}
	return d, nil
}

// Fingerprint returns the node's fingerprint.
func (d *Daemon) Fingerprint() identity.Fingerprint { return d.id.Fingerprint() }

// Addr returns the UDP address actually bound.
func (d *Daemon) Addr() string { return d.tr.Addr().String() }

// Run serves until ctx is cancelled or Close is called, then shuts down and
// returns nil.
func (d *Daemon) Run(ctx context.Context) error {
	d.wg.Add(4)
	go func() {
		defer d.wg.Done()
		d.acceptLoop()
	}()
	go func() {
		defer d.wg.Done()
		d.selectLoop()
	}()
	go func() {
		defer d.wg.Done()
		d.publishLoop()
	}()
	go func() {
		defer d.wg.Done()
		d.eng.Run(d.ctx) // purge, boost pruning, anti-entropy with every link
	}()
	if err := d.startDiscovery(); err != nil {
		d.log.Error("mDNS discovery did not start; static peers still work", "err", err)
	}
	for _, p := range d.cfg.Peers {
		if p.FP.Equal(d.id.Fingerprint()) {
			d.log.Warn("ignoring static peer with our own fingerprint", "peer", p.Addr)
			continue
		}
		d.wg.Add(1)
		go func() {
			defer d.wg.Done()
			d.keepStatic(p)
		}()
	}
	select {
	case <-ctx.Done():
	case <-d.ctx.Done():
	}
	return d.Close()
}

// Close closes every link, the socket and the control socket, and waits
// for every goroutine. Safe to call more than once.
func (d *Daemon) Close() error {
	d.closeOnce.Do(func() {
		// Cancelled under mu: goroutines started under mu after checking
		// ctx are counted in wg before Wait runs.
		d.mu.Lock()
		d.cancel()
		d.mu.Unlock()
		if d.disc != nil {
			d.disc.Close()
		}
		d.mu.Lock()
		for _, l := range d.links {
			l.Close(link.CodeClosing, "node shutting down")
		}
		d.mu.Unlock()
		if d.ctl != nil {
			d.ctl.Close()
		}
		d.tr.Close()
		d.wg.Wait()
		d.eng.Close()
		if err := d.st.Close(); err != nil {
			d.log.Error("close store", "err", err)
		}
	})
	return nil
}

func (d *Daemon) acceptLoop() {
	for {
		conn, err := d.tr.Accept(d.ctx)
		if err != nil {
			if d.ctx.Err() == nil {
				d.log.Error("accept stopped", "err", err)
			}
			return
		}
		switch conn.ConnectionState().TLS.NegotiatedProtocol {
		case link.ALPNPeer:
			select {
			case d.pending <- struct{}{}:
			default:
				conn.CloseWithError(link.CodeRefused, "busy")
				d.log.Warn("refused inbound link: too many handshakes in progress", "addr", conn.RemoteAddr())
				continue
			}
			d.wg.Add(1)
			go func() {
				defer d.wg.Done()
				d.acceptPeer(conn)
			}()
		case link.ALPNClient:
			select {
			case d.clients <- struct{}{}:
			default:
				conn.CloseWithError(link.CodeRefused, "busy")
				d.log.Warn("refused client: too many clients", "addr", conn.RemoteAddr())
				continue
			}
			d.wg.Add(1)
			go func() {
				defer d.wg.Done()
				defer func() { <-d.clients }()
				d.serveClient(conn)
			}()
		default:
			conn.CloseWithError(link.CodeRefused, "unknown protocol")
		}
	}
}

func (d *Daemon) acceptPeer(conn *quic.Conn) {
	ctx, cancel := context.WithTimeout(d.ctx, dialTimeout)
	fp, err := link.PeerFingerprint(conn.ConnectionState().TLS)
	if err != nil {
		cancel()
		<-d.pending
		conn.CloseWithError(link.CodeRefused, err.Error())
		return
	}
	// Checked before hello, so the dialler sees a failed dial (and backs
	// off) rather than a link that dies at once.
	if !d.inboundAllowed(fp) {
		cancel()
		<-d.pending
		conn.CloseWithError(link.CodeRefused, "too many inbound links")
		d.warnCap(fp)
		return
	}
	l, err := link.Establish(ctx, conn, false, d.peerBootstrap(fp), d.hello, d.log)
	cancel()
	<-d.pending
	if err != nil {
		if closedAsDuplicate(err) || closedAsDuplicate(context.Cause(conn.Context())) {
			// Both sides dialled at once and the peer kept the other
			// connection: routine, not a warning.
			d.log.Debug("inbound link superseded by our own dial", "addr", conn.RemoteAddr())
			return
		}
		d.log.Warn("refused inbound link", "addr", conn.RemoteAddr(), "err", err)
		return
	}
	if !d.inboundAllowed(fp) {
		l.Close(link.CodeRefused, "too many inbound links")
		d.warnCap(fp)
		return
	}
	d.runLink(l, linkInfo{})
}

// inboundAllowed reports whether an inbound link from fp may be held:
// static peers, and nodes linked already (a reconnect replaces the old
// link), always; others while inbound links are under the cap.
func (d *Daemon) inboundAllowed(fp identity.Fingerprint) bool {
	for _, p := range d.cfg.Peers {
		if p.FP == fp {
			return true
		}
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.links[fp] != nil {
		return true
	}
	n := 0
	for _, l := range d.links {
		if !l.Outbound() {
			n++
		}
	}
	return n < d.inboundCap()
}

// warnCap logs a refusal at the inbound cap, at most once a minute.
func (d *Daemon) warnCap(fp identity.Fingerprint) {
	d.mu.Lock()
	warn := time.Since(d.capWarned) >= time.Minute
	if warn {
		d.capWarned = time.Now()
	}
	d.mu.Unlock()
	if warn {
		d.log.Warn("refused inbound link: at the inbound cap (logged once a minute)", "peer", fp, "cap", d.inboundCap())
	} else {
		d.log.Debug("refused inbound link: at the inbound cap", "peer", fp)
	}
}

// peerBootstrap is the MeshPeer offered to the neighbour fp. A call
// from it that panics drops its link (Abort: the call is still running).
func (d *Daemon) peerBootstrap(fp identity.Fingerprint) capnp.Client {
	return wire.NewServer(fp, wire.ServerOptions{
		Local:   d.hello,
		Stats:   d.stats,
		Handler: d.eng,
		Log:     d.log,
		Drop: func(reason string) {
			if l := d.linkTo(fp); l != nil {
				l.Abort(link.CodeRefused, reason)
			}
		},
	}).Client()
}

func (d *Daemon) stats() (time.Duration, int) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return time.Since(d.started), len(d.links)
}

// dialler returns whose connection l is: the side that dialled it.
func (d *Daemon) dialler(l *link.Link) identity.Fingerprint {
	if l.Outbound() {
		return d.id.Fingerprint()
	}
	return l.Peer()
}

// linkInfo is how a link came to be, recorded when it is registered.
type linkInfo struct {
	via     string // viaStatic, viaMDNS or viaExchange; "" for inbound
	anchor  bool   // one of the neighbour plan's random picks
	planned bool   // dialled by the neighbour plan: clears its dialling mark
}

// addLink registers l, resolving a second connection to the same peer:
// when two nodes dial each other at once, both keep the connection dialled
// by the lower fingerprint; a newer connection from the same dialler
// replaces the older (the peer restarted before we noticed). It returns
// false when l lost and was closed. A planned dial stops counting as under
// way in the same step, so the plan never sees it neither dialling nor
// linked.
func (d *Daemon) addLink(l *link.Link, in linkInfo) bool {
	fp := l.Peer()
	d.mu.Lock()
	if in.planned {
		delete(d.dialing, fp)
	}
	old := d.links[fp]
	keepNew := old == nil || d.dialler(l) == d.dialler(old) || d.dialler(l).Less(d.dialler(old))
	if keepNew {
		d.links[fp] = l
		if in.via != "" {
			d.via[fp] = in.via
		} else {
			delete(d.via, fp)
		}
		if in.anchor {
			d.anchor[fp] = true
		} else {
			delete(d.anchor, fp)
		}
	}
	d.mu.Unlock()
	if in.planned {
		d.kickSelect() // the dial is over: the plan may go on
	}
	if !keepNew {
		l.Close(link.CodeDuplicate, "duplicate link")
		d.log.Debug("dropped duplicate link", "peer", l.Peer())
		return false
	}
	if old != nil {
		old.Close(link.CodeDuplicate, "duplicate link")
		d.log.Debug("replaced link", "peer", l.Peer())
	}
	return true
}

func (d *Daemon) removeLink(l *link.Link) {
	d.mu.Lock()
	if d.links[l.Peer()] == l {
		delete(d.links, l.Peer())
		delete(d.via, l.Peer())
		delete(d.anchor, l.Peer())
	}
	d.mu.Unlock()
	d.kickSelect()
}

// linkTo returns the current link to fp, or nil.
func (d *Daemon) linkTo(fp identity.Fingerprint) *link.Link {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.links[fp]
}

// runLink keeps l registered and probed until it ends. It returns false
// at once when l lost to another connection to the same peer.
func (d *Daemon) runLink(l *link.Link, in linkInfo) (registered bool) {
	if !d.addLink(l, in) {
		return false
	}
	dir := "inbound"
	if l.Outbound() {
		dir = "outbound"
	}
	d.log.Info("link up", "peer", l.Peer(), "addr", l.RemoteAddr(), "direction", dir, "peer_software", l.PeerHello().Software)
	defer d.removeLink(l)
	stopRelay := d.eng.AddPeer(l.Peer(), wire.NewPeer(l.Remote()))
	defer stopRelay()
	t := time.NewTicker(probeInterval)
	defer t.Stop()
	for {
		select {
		case <-d.ctx.Done():
			l.Close(link.CodeClosing, "node shutting down")
			return true
		case <-l.Done():
			d.log.Info("link down", "peer", l.Peer(), "addr", l.RemoteAddr(), "reason", linkEndReason(l.Err()))
			if closedBy(l.Err(), link.CodeReplaced) {
				// It chose a faster link than ours: dialling it again at
				// once would undo that.
				d.table.Cooldown(l.Peer(), neighbours.Explore, time.Now())
			}
			return true
		case <-t.C:
			ctx, cancel := context.WithTimeout(d.ctx, probeTimeout)
			err := l.Probe(ctx)
			cancel()
			if err != nil && d.ctx.Err() == nil {
				d.log.Info("link down: probe failed", "peer", l.Peer(), "err", err)
				l.Close(link.CodeClosing, "probe failed")
				return true
			}
		}
	}
}

// closedBy reports whether err is the peer closing the connection with
// code.
func closedBy(err error, code quic.ApplicationErrorCode) bool {
	var app *quic.ApplicationError
	return errors.As(err, &app) && app.Remote && app.ErrorCode == code
}

// closedAsDuplicate reports whether err is the peer closing a connection
// because it keeps another one to us.
func closedAsDuplicate(err error) bool { return closedBy(err, link.CodeDuplicate) }

func linkEndReason(err error) string {
	var app *quic.ApplicationError
	if errors.As(err, &app) {
		if app.ErrorMessage != "" {
			return app.ErrorMessage
		}
		return fmt.Sprintf("closed with code %d", app.ErrorCode)
	}
	var idle *quic.IdleTimeoutError
	if errors.As(err, &idle) {
		return "idle timeout"
	}
	if err == nil {
		return "closed"
	}
	return err.Error()
}

// keepStatic holds a link to a static peer for the node's whole life,
// redialling with exponential backoff and jitter while it is down.
func (d *Daemon) keepStatic(p link.PeerAddr) {
	b := newBackoff(minRedial, maxRedial)
	for d.ctx.Err() == nil {
		if l := d.linkTo(p.FP); l != nil {
			// Linked already (perhaps it dialled us): watch that link.
			select {
			case <-l.Done():
			case <-d.ctx.Done():
				return
			}
			if time.Since(l.Since()) >= stableLink {
				b.reset()
			}
			continue
		}
		l, err := d.dial(p)
		if err != nil {
			if d.ctx.Err() != nil {
				return
			}
			wait := b.next()
			d.log.Warn("static peer unreachable", "peer", p.String(), "err", err, "retry_in", wait.Round(time.Millisecond))
			select {
			case <-time.After(wait):
			case <-d.ctx.Done():
				return
			}
			continue
		}
		up := time.Now()
		d.runLink(l, linkInfo{via: viaStatic})
		if time.Since(up) >= stableLink {
			b.reset()
		}
		// Pause before redialling so a link that flaps cannot spin; a
		// link that ended soon after it came up (refused, replaced) keeps
		// the backoff growing.
		select {
		case <-time.After(b.next()):
		case <-d.ctx.Done():
			return
		}
	}
}

func (d *Daemon) dial(p link.PeerAddr) (*link.Link, error) {
	ctx, cancel := context.WithTimeout(d.ctx, dialTimeout)
	defer cancel()
	conn, err := d.tr.Dial(ctx, p.Addr, p.FP, link.ALPNPeer)
	if err != nil {
		return nil, err
	}
	return link.Establish(ctx, conn, true, d.peerBootstrap(p.FP), d.hello, d.log)
}

// pick says why a link is kept, for status; d.mu is held.
func (d *Daemon) pick(l *link.Link, via string) string {
	switch {
	case !l.Outbound() || (via != viaMDNS && via != viaExchange):
		return ""
	case l.Peer() == d.trial:
		return "trial"
	case d.anchor[l.Peer()]:
		return "random"
	default:
		return "rtt"
	}
}

// Status reports the node and its links for the control socket.
func (d *Daemon) Status() control.Status {
	fp := d.id.Fingerprint()
	st := control.Status{
		Fingerprint: fp.String(),
		Short:       fp.Short(),
		Version:     buildinfo.Version,
		Listen:      d.Addr(),
		UptimeS:     int64(time.Since(d.started) / time.Second),
		Peers:       []control.Peer{},
	}
	ss := d.st.Stats()
	sn := d.eng.SeenStats()
	st.Seen = control.Seen{FillRatio: sn.FillRatio, FPRate: sn.FPRate, Duplicates: sn.Duplicates, FalsePositives: sn.FalsePositives, MemoryBytes: sn.MemoryBytes}
	st.Store = control.Store{Path: d.st.Path(), Envelopes: ss.Envelopes, Bytes: ss.Bytes, MaxBytes: ss.MaxBytes, Tombstones: ss.Tombstones, Kinds: map[string]int{}}
	d.st.IDs(func(_ gossip.ID, k schemas.Envelope_Kind) bool {
		st.Store.Kinds[k.String()]++
		return true
	})
	d.mu.Lock()
	for _, l := range d.links {
		dir := "inbound"
		if l.Outbound() {
			dir = "outbound"
		}
		via := d.via[l.Peer()]
		if via == "" {
			via = viaInbound
			if l.Outbound() {
				via = viaStatic
			}
		}
		st.Peers = append(st.Peers, control.Peer{
			Via:         via,
			Fingerprint: l.Peer().String(),
			Addr:        l.RemoteAddr().String(),
			Direction:   dir,
			RTTMs:       float64(l.RTT().Microseconds()) / 1000,
			LinkedS:     int64(time.Since(l.Since()) / time.Second),
			Pick:        d.pick(l, via),
		})
	}
	d.mu.Unlock()
	sort.Slice(st.Peers, func(i, j int) bool { return st.Peers[i].Fingerprint < st.Peers[j].Fingerprint })
	return st
}
