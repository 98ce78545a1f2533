// Package daemon is the qpq node: it owns the node identity, the QUIC
// transport, the links to neighbours (static peers now; discovery later),
// the client-facing service and the control socket, and shuts them all
// down together.
package daemon

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/quicproquo/qpq/gossip/relay"
	"github.com/quicproquo/qpq/gossip/store"
	"github.com/quicproquo/qpq/mesh/discovery"
	"github.com/quicproquo/qpq/mesh/identity"
	"github.com/quicproquo/qpq/mesh/link"
	"github.com/quicproquo/qpq/mesh/neighbours"
	"github.com/quicproquo/qpq/node/buildinfo"
	"github.com/quicproquo/qpq/node/config"
	"github.com/quicproquo/qpq/node/control"
)

// Limits that keep a flood of connections from growing memory.
const (
	maxPendingHandshakes = 32 // inbound connections still in hello
	maxHandshakesPerAddr = 4  // of those, from one IPv4 address or IPv6 /64
	// inboundHelloTimeout bounds an inbound hello: a neighbour that
	// completed TLS answers hello within a few round trips.
	inboundHelloTimeout = 5 * time.Second
	maxClients          = 64 // client connections held at once
	probeInterval       = 10 * time.Second
	probeTimeout        = 10 * time.Second
	dialTimeout         = 10 * time.Second
	minRedial           = time.Second
	maxRedial           = time.Minute
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

	pending  chan struct{} // semaphore: inbound handshakes in progress
	hsMu     sync.Mutex
	hsByAddr map[string]int // inbound handshakes in progress per source address
	clients  *clientTable   // client connections admitted

	disc *discovery.Discovery // nil when mDNS is off

	table *neighbours.Table // nodes learnt by mDNS and peer exchange
	kick  chan struct{}     // wakes selectLoop

	nlinks atomic.Int32 // len(links), read without mu by health calls

	place     *placer     // mailbox placement (placement.go)
	onion     *onionRelay // onion relaying (onion.go)
	dialled   *dialPool   // short-lived links to nodes that are not neighbours (dialled.go)
	cellsGone cellTotals  // cell counts of links that ended

	mu        sync.Mutex // guards the fields below
	links     map[identity.Fingerprint]*link.Link
	cells     map[identity.Fingerprint]*cellLink   // links' cell streams (cells.go)
	bridges   map[identity.Fingerprint]*bridgeLink // links to other islands' bridges (bridge.go)
	via       map[identity.Fingerprint]string      // how each link came to be
	dialing   map[identity.Fingerprint]bool        // learnt nodes being dialled: true for random picks
	anchor    map[identity.Fingerprint]bool        // links that are random picks
	capWarned time.Time                            // last inbound-cap warning (one a minute)
	trial     identity.Fingerprint                 // a link dialled to compare its RTT
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
		cfg:      cfg,
		log:      log,
		id:       id,
		tr:       tr,
		st:       st,
		hello:    localHello(cfg.Domain, cfg.DecoyRate),
		started:  time.Now(),
		ctx:      ctx,
		cancel:   cancel,
		pending:  make(chan struct{}, maxPendingHandshakes),
		hsByAddr: map[string]int{},
		clients:  newClientTable(maxClients),
		links:    map[identity.Fingerprint]*link.Link{},
		cells:    map[identity.Fingerprint]*cellLink{},
		via:      map[identity.Fingerprint]string{},
		dialing:  map[identity.Fingerprint]bool{},
		anchor:   map[identity.Fingerprint]bool{},
		table:    neighbours.NewTable(maxCandidates, rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64()))),
		kick:     make(chan struct{}, 1),
		dialled:  newDialPool(),
	}
	// The first trial comes a full Explore after start, not at once.
	d.lastTrial = d.started
	d.place = newPlacer(d)
	if d.onion, err = newOnionRelay(d); err != nil {
		cancel()
		tr.Close()
		st.Close()
		return nil, err
	}
	d.eng = relay.New(relay.Options{Store: st, VerifyBundle: verifyBundle, VerifyDescriptor: verifyDescriptor,
		OnDescriptor: d.onDescriptorFrom, OnOnion: d.onion.onEnvelope, Log: log, ReceiptHops: uint8(min(cfg.MaxHops, 16))})
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
	// Counted under mu and only while open: a Close that has already
	// cancelled may be in wg.Wait, which an Add must not race.
	var static []link.PeerAddr
	for _, p := range d.cfg.Peers {
		if p.FP.Equal(d.id.Fingerprint()) {
			d.log.Warn("ignoring static peer with our own fingerprint", "peer", p.Addr)
			continue
		}
		static = append(static, p)
	}
	d.mu.Lock()
	if d.ctx.Err() != nil {
		d.mu.Unlock()
		return d.Close()
	}
	d.wg.Add(7 + len(static))
	d.mu.Unlock()
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
	go func() {
		defer d.wg.Done()
		d.dialled.run(d.ctx) // closes idle dialled links
	}()
	go func() {
		defer d.wg.Done()
		d.place.run(d.ctx)
	}()
	go func() {
		defer d.wg.Done()
		d.onion.run(d.ctx)
	}()
	if err := d.startDiscovery(); err != nil {
		d.log.Error("mDNS discovery did not start; static peers still work", "err", err)
	}
	for _, p := range static {
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
		d.dialled.close()
		// Closed outside mu: closing a link waits for the calls in
		// progress on it, and a neighbour's call may need mu.
		d.mu.Lock()
		links := make([]*link.Link, 0, len(d.links))
		for _, l := range d.links {
			links = append(links, l)
		}
		d.mu.Unlock()
		for _, l := range links {
			l.Close(link.CodeClosing, "node shutting down")
		}
		d.clients.closeAll("node shutting down")
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

// localHello is what this node says of itself in hello. The test hook
// QPQ_TEST_PROTOCOL_VERSION makes it speak no newer than that version, so
// that a test can stand a node of this build in for an older one
// (routers upgrade one at a time); unset, as everywhere but such a test,
// it changes nothing. decoyRate is the node's cover rate per link, which
// hello states from protocol 6.
func localHello(domain string, decoyRate float64) link.Hello {
	h := link.LocalHello(buildinfo.String(), domain)
	if v, err := strconv.ParseUint(os.Getenv("QPQ_TEST_PROTOCOL_VERSION"), 10, 16); err == nil && v >= uint64(h.MinVersion) && v < uint64(h.Version) {
		h.Version = uint16(v)
	}
	if h.Version >= link.StreamVersion {
		h.DecoyRate = decoyRate
	}
	return h
}
