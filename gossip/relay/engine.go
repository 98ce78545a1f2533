// Package relay is store and forward between linked nodes: it accepts
// envelopes from clients and neighbours into the store, pushes each new
// one once to every neighbour except the one it came from, raises the hop
// limit neighbours hold a broadcast with when a better copy arrives, runs
// anti-entropy summaries, applies receipts and bundle replacement, and
// wakes clients waiting on their mailbox. Engine.Run keeps its schedule
// (purge, boost pruning, summaries). Files: engine.go (the engine and its
// schedule), accept.go (admission), peer.go (per-neighbour state and
// sending), raise.go (hop raises), summary.go and filter.go
// (anti-entropy), mailbox.go (mailbox, channels, acks, waiters),
// receipts.go (waking the watchers of the receipt stream), limits.go
// (the neighbour protocol's limits), errors.go. The wire form of the
// calls is gossip/wire's.
package relay

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/quicproquo/qpq/gossip"
	"github.com/quicproquo/qpq/gossip/seen"
	"github.com/quicproquo/qpq/gossip/store"
	"github.com/quicproquo/qpq/mesh/identity"
	"github.com/quicproquo/qpq/schemas"
)

// Store is what the engine needs of the envelope store.
type Store interface {
	Put(e gossip.Envelope, source string) (bool, error)
	Get(id gossip.ID) (gossip.Envelope, bool, error)
	Mailbox(dest []byte, limit int) ([]gossip.Envelope, error)
	Delete(id gossip.ID) (bool, error)
	DeleteByReceiptTag(tag []byte) (int, error)
	// Apply makes a batch of puts and deletions in one transaction
	// (one commit); see gossip/store.
	Apply(ops []store.Op) ([]store.Result, error)
	Has(id gossip.ID) bool
	IDs(fn func(id gossip.ID, kind schemas.Envelope_Kind) bool) error
	// Purge removes expired envelopes and old tombstones.
	Purge() (expired, tombstones int, err error)
}

// Peer is a linked neighbour as the engine sees it.
type Peer interface {
	// Push sends envelopes. A neighbour may take only the first of them
	// and say when to send the rest (PushResult), or, an older one,
	// refuse them all with an error IsRateLimited recognises.
	Push(ctx context.Context, envs []gossip.Envelope) (PushResult, error)
	Summary(ctx context.Context, s Summary) error
	// Raise tells the neighbour it may hold broadcasts it has with a
	// higher hop limit. A neighbour that does not serve it (an older
	// node) gives an error wrapping ErrRaiseUnsupported.
	Raise(ctx context.Context, raises []HopRaise) error
}

// PushResult is a neighbour's answer to a push.
type PushResult struct {
	Accepted int // envelopes it newly stored
	// Taken is how many envelopes, from the first, it handled (stored or
	// refused for good); the caller sends the rest again, no sooner than
	// RetryAfter from now.
	// Taken and RetryAfter both zero (an older neighbour's answer) mean
	// all were taken.
	Taken      int
	RetryAfter time.Duration
}

// Versioned is a Peer that says which protocol version its link agreed
// on (gossip/wire's Peer does). A Peer that does not is taken to speak
// version 1, the first.
type Versioned interface {
	ProtocolVersion() uint16
}

// peerVersion is the protocol version p's link agreed on.
func peerVersion(p Peer) uint16 {
	if v, ok := p.(Versioned); ok {
		return v.ProtocolVersion()
	}
	return 1
}

// BundleVerifier checks a SignedBundle (or a SignedDescriptor) and
// returns whose it is and its sequence number. The node passes the e2e
// and descriptor packages' verifiers.
type BundleVerifier func(signed []byte) (fp identity.Fingerprint, seq uint64, err error)

// Options configure an Engine.
type Options struct {
	Store            Store
	VerifyBundle     BundleVerifier
	VerifyDescriptor BundleVerifier
	// OnDescriptor is called (from Accept's goroutine; it must not block)
	// with each node descriptor newly stored, for peer exchange, and the
	// neighbour it arrived from (zero when the node made it or a client
	// handed it over), so that dials it causes are budgeted per neighbour.
	OnDescriptor func(signed []byte, from identity.Fingerprint)
	// OnOnion is called (from Accept's goroutine; it must not block) with
	// each onion envelope newly stored, so the node it is addressed to
	// can peel it. Nil: none.
	OnOnion func(env gossip.Envelope)
	Log     *slog.Logger
	// PeerRate and PeerBurst bound envelopes accepted from one neighbour
	// per second (token bucket). Defaults 200 and 2000.
	PeerRate, PeerBurst float64
	// ReceiptTTL and ReceiptHops are given to receipts the node creates.
	// Defaults 7 days and 16.
	ReceiptTTL  time.Duration
	ReceiptHops uint8
	// Now is the monotonic clock for rate limits (tests inject it).
	Now func() time.Time
	// After is the timer a sender waits on when a neighbour asks it to
	// hold back; tests that drive Now inject one to match. Default
	// time.After.
	After func(time.Duration) <-chan time.Time
	// MaxBroadcastHops caps a broadcast's hop limit (DESIGN: 7).
	MaxBroadcastHops uint8
	// Seen configures the broadcast seen-set; its Confirm is the store.
	Seen seen.Options
	// PurgeInterval paces Run's purge of the store and pruning of raised
	// hop limits. Default 1 minute.
	PurgeInterval time.Duration
	// SummaryInterval paces Run's anti-entropy with each neighbour (one
	// summary when it links, then one per interval). Default 1 minute.
	SummaryInterval time.Duration
	// SummaryGap is the least time between summaries handled from one
	// neighbour, after a burst of summaryBurst; one sooner is refused
	// with ErrRateLimited (the sender retries). Default 10 s.
	SummaryGap time.Duration
	// MaxSummaryPush bounds the envelopes one received summary queues for
	// the neighbour; the rest wait for the next round. Default 8192 (a
	// partial summary: its share of it).
	MaxSummaryPush int
	// SummaryPartIDs bounds the ids of one partial summary sent to a
	// version-2 neighbour (ae.go). Default 32768, about 39 KiB of filter.
	SummaryPartIDs int
}

// Engine owns propagation state and its schedule. Create with New, run
// its housekeeping with Run; Close stops every goroutine it started.
type Engine struct {
	o    Options
	log  *slog.Logger
	seen *seen.Set // broadcast ids: a keyed bloom pre-check, confirmed exactly

	peersMu sync.Mutex // guards the fields below
	peers   map[identity.Fingerprint]*peer
	closed  bool
	// runCtx is Run's context while it runs (nil before): each
	// neighbour's summary loop is started under it.
	runCtx    context.Context
	runCancel context.CancelFunc

	boostMu sync.Mutex          // guards boost
	boost   map[gossip.ID]uint8 // broadcasts that later arrived with more hops left

	waitersMu sync.Mutex // guards waiters
	waiters   map[[32]byte]map[chan struct{}]struct{}

	receipts note // fired when a receipt is stored (receipts.go)

	// pushWaits counts pushes a neighbour asked us to hold back (flow
	// control), for status and benchmarks.
	pushWaits atomic.Int64

	holds holdSet // DMs stored but not offered to neighbours (hold.go)

	ae aeCache // the current anti-entropy rounds, shared by all links (ae.go)

	wg sync.WaitGroup // every goroutine the engine starts
}

// New returns an engine over o.Store.
func New(o Options) *Engine {
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.PeerRate == 0 {
		o.PeerRate = 200
	}
	if o.PeerBurst == 0 {
		o.PeerBurst = 2000
	}
	if o.ReceiptTTL == 0 {
		o.ReceiptTTL = 7 * 24 * time.Hour
	}
	if o.ReceiptHops == 0 {
		o.ReceiptHops = 16
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.After == nil {
		o.After = time.After
	}
	if o.PurgeInterval <= 0 {
		o.PurgeInterval = time.Minute
	}
	if o.SummaryInterval <= 0 {
		o.SummaryInterval = time.Minute
	}
	if o.SummaryGap <= 0 {
		o.SummaryGap = 10 * time.Second
	}
	if o.MaxSummaryPush <= 0 {
		o.MaxSummaryPush = 8192
	}
	if o.SummaryPartIDs <= 0 {
		o.SummaryPartIDs = defaultSummaryPartIDs
	}
	if o.MaxBroadcastHops == 0 {
		o.MaxBroadcastHops = 7
	}
	so := o.Seen
	if so.Confirm == nil {
		so.Confirm = o.Store.Has
	}
	set, err := seen.New(so)
	if err != nil {
		// Only programming errors reach here: the options are constants
		// or tests' own; fall back to the defaults.
		o.Log.Error("seen-set options refused; using defaults", "err", err)
		set, _ = seen.New(seen.Options{Confirm: o.Store.Has})
	}
	return &Engine{o: o, log: o.Log, seen: set, boost: map[gossip.ID]uint8{}, peers: map[identity.Fingerprint]*peer{}, waiters: map[[32]byte]map[chan struct{}]struct{}{}}
}

// PushWaits counts the pushes neighbours asked this node to hold back
// and send again later (flow control) since New.
func (e *Engine) PushWaits() int64 { return e.pushWaits.Load() }

// SeenStats reports the broadcast seen-set.
func (e *Engine) SeenStats() seen.Stats { return e.seen.Stats() }

// Run keeps the engine's schedule until ctx is cancelled or Close is
// called: every PurgeInterval it purges the store and forgets raised hop
// limits of broadcasts no longer held, and with each neighbour it runs
// anti-entropy (see syncLoop). Call it once; a second call, or one after
// Close, returns at once.
func (e *Engine) Run(ctx context.Context) {
	e.peersMu.Lock()
	if e.closed || e.runCtx != nil {
		e.peersMu.Unlock()
		return
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	e.runCtx, e.runCancel = ctx, cancel
	for _, p := range e.peers {
		e.startSyncLocked(p)
	}
	e.peersMu.Unlock()
	t := time.NewTicker(e.o.PurgeInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			e.purge()
		}
	}
}

// purge removes expired envelopes and tombstones, then the boosts of
// broadcasts that went with them.
func (e *Engine) purge() {
	exp, tomb, err := e.o.Store.Purge()
	if err != nil {
		e.log.Error("purge failed", "err", err)
	} else if exp+tomb > 0 {
		e.log.Debug("purged", "expired", exp, "tombstones", tomb)
	}
	if n := e.pruneHeld(); n > 0 {
		e.log.Debug("forgot held DMs no longer stored", "count", n)
	}
	if n := e.PruneBoosts(); n > 0 {
		e.log.Debug("forgot raised hop limits of broadcasts no longer held", "count", n)
	}
}

// Close stops every sender and wakes every waiter. Safe to call twice.
func (e *Engine) Close() {
	e.peersMu.Lock()
	if e.closed {
		e.peersMu.Unlock()
		return
	}
	e.closed = true
	if e.runCancel != nil {
		e.runCancel()
	}
	for _, p := range e.peers {
		p.cancel()
	}
	e.peersMu.Unlock()
	e.waitersMu.Lock()
	for _, ws := range e.waiters {
		for ch := range ws {
			select {
			case ch <- struct{}{}:
			default:
			}
		}
	}
	e.waitersMu.Unlock()
	e.wg.Wait()
}

// peer returns the registered neighbour fp, or nil.
func (e *Engine) peer(fp identity.Fingerprint) *peer {
	e.peersMu.Lock()
	defer e.peersMu.Unlock()
	return e.peers[fp]
}
