// Package relay is store and forward between linked nodes: it accepts
// envelopes from clients and neighbours into the store, pushes each new
// one once to every neighbour except the one it came from, raises the hop
// limit neighbours hold a broadcast with when a better copy arrives, runs
// anti-entropy summaries, applies receipts and bundle replacement, and
// wakes clients waiting on their mailbox.
package relay

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/bits-and-blooms/bloom/v3"

	"github.com/quicproquo/qpq/gossip"
	"github.com/quicproquo/qpq/gossip/seen"
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
	Has(id gossip.ID) bool
	IDs(fn func(id gossip.ID, kind schemas.Envelope_Kind) bool) error
}

// Peer is a linked neighbour as the engine sees it.
type Peer interface {
	Push(ctx context.Context, envs []gossip.Envelope) (accepted int, err error)
	Summary(ctx context.Context, s Summary) error
	// Raise tells the neighbour it may hold broadcasts it has with a
	// higher hop limit. A neighbour that does not serve it (an older
	// node) gives an error wrapping ErrRaiseUnsupported.
	Raise(ctx context.Context, raises []HopRaise) error
}

// HopRaise says the receiver may hold the broadcast ID with HopLimit
// (schemas.HopRaise in Go form).
type HopRaise struct {
	ID       gossip.ID
	HopLimit uint8
}

// Summary is an anti-entropy digest (schemas.Summary in Go form).
type Summary struct {
	Filter []byte // bloom/v3 MarshalBinary
	Key    []byte // prepended to each id before it is added
	Count  uint32
}

// BundleVerifier checks a SignedBundle (or a SignedDescriptor) and
// returns whose it is and its sequence number. The node passes the e2e
// and descriptor packages' verifiers.
type BundleVerifier func(signed []byte) (fp identity.Fingerprint, seq uint64, err error)

// Errors Accept and HandleRaise return, and one a Peer returns.
var (
	ErrRateLimited = errors.New("peer is sending too fast")
	ErrForged      = errors.New("forged or mismatched envelope")
	// ErrRaiseUnsupported is wrapped by Peer.Raise when the neighbour does
	// not serve raise; the engine then sends it no more raises.
	ErrRaiseUnsupported = errors.New("peer does not serve raise")
)

const (
	summaryKeyLen  = 16
	maxSummaryIDs  = 1 << 20
	summaryFPRate  = 0.01
	pushTimeout    = 20 * time.Second
	peerQueueLen   = 4096
	maxSentPerPeer = 1 << 17 // ids remembered per neighbour (~4 MiB at worst)
	// maxRetryRaises bounds the raises remembered per neighbour for the
	// next summary round; past it a lost raise is not offered again.
	maxRetryRaises = 4096
	// knownAll is the level recorded for an id whose kind is never raised
	// (everything but broadcasts): nothing is ever above it.
	knownAll = ^uint8(0)
)

// Options configure an Engine.
type Options struct {
	Store            Store
	VerifyBundle     BundleVerifier
	VerifyDescriptor BundleVerifier
	// OnDescriptor is called (from Accept's goroutine; it must not block)
	// with each node descriptor newly stored, for peer exchange.
	OnDescriptor func(signed []byte)
	Log          *slog.Logger
	// PeerRate and PeerBurst bound envelopes accepted from one neighbour
	// per second (token bucket). Defaults 200 and 2000.
	PeerRate, PeerBurst float64
	// ReceiptTTL and ReceiptHops are given to receipts the node creates.
	// Defaults 7 days and 16.
	ReceiptTTL  time.Duration
	ReceiptHops uint8
	// Now is the monotonic clock for rate limits (tests inject it).
	Now func() time.Time
	// MaxBroadcastHops caps a broadcast's hop limit (DESIGN: 7).
	MaxBroadcastHops uint8
	// Seen configures the broadcast seen-set; its Confirm is the store.
	Seen seen.Options
}

// Engine owns propagation state. Create with New; Close stops every
// peer's sender.
type Engine struct {
	o    Options
	log  *slog.Logger
	seen *seen.Set // broadcast ids: a keyed bloom pre-check, confirmed exactly

	mu      sync.Mutex          // guards the fields below
	boost   map[gossip.ID]uint8 // broadcasts that later arrived with more hops left
	peers   map[identity.Fingerprint]*peer
	waiters map[[32]byte]map[chan struct{}]struct{}
	closed  bool

	wg sync.WaitGroup
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

// SeenStats reports the broadcast seen-set.
func (e *Engine) SeenStats() seen.Stats { return e.seen.Stats() }

// peer is one neighbour's sender: a bounded queue of ids drained by one
// goroutine, and the ids it already has (sent to it, or received from it)
// with the hop limit it is known to hold each with.
type peer struct {
	fp     identity.Fingerprint
	p      Peer
	queue  chan gossip.ID
	cancel context.CancelFunc

	mu sync.Mutex // guards the fields below
	// known maps an id the neighbour has to the least hop limit it holds
	// it with: for one we sent, the decremented limit we sent; for one it
	// sent us, the limit received plus one; knownAll for kinds that are
	// never raised.
	known   map[gossip.ID]uint8
	retry   map[gossip.ID]struct{} // raises to offer again (lost or refused)
	noRaise bool                   // the neighbour does not serve raise
	tokens  float64
	last    time.Time
}

// Outcomes of peer.offer.
const (
	offerNone  = iota // the neighbour holds it at least as well already
	offerPush         // the neighbour lacks it: send the envelope
	offerRaise        // the neighbour holds it with fewer hops: send a raise
)

// offer claims id for the neighbour at hop limit level and says what to
// send: the claim is made before sending, so the same id queued twice
// never goes out twice.
func (p *peer) offer(id gossip.ID, level uint8) (what int, prev uint8) {
	p.mu.Lock()
	defer p.mu.Unlock()
	have, ok := p.known[id]
	switch {
	case !ok:
		p.rememberLocked(id, level)
		return offerPush, 0
	case have < level && !p.noRaise:
		p.known[id] = level
		return offerRaise, have
	}
	return offerNone, 0
}

// unclaim undoes a raise claim that was not delivered, unless something
// raised the record since: the next summary round offers it again.
func (p *peer) unclaim(id gossip.ID, claimed, prev uint8) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if have, ok := p.known[id]; ok && have == claimed {
		p.known[id] = prev
		if len(p.retry) < maxRetryRaises {
			p.retry[id] = struct{}{}
		}
	}
}

// takeRetries empties the set of raises to offer again.
func (p *peer) takeRetries() []gossip.ID {
	p.mu.Lock()
	defer p.mu.Unlock()
	ids := make([]gossip.ID, 0, len(p.retry))
	for id := range p.retry {
		ids = append(ids, id)
	}
	clear(p.retry)
	return ids
}

// settled reports that the neighbour holds id and can get nothing more
// for it: a kind never raised, a limit no raise could beat, or a
// neighbour that takes no raises.
func (p *peer) settled(id gossip.ID, maxHops uint8) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	have, ok := p.known[id]
	return ok && (have == knownAll || int(have)+1 >= int(maxHops) || p.noRaise)
}

// remember records that the neighbour holds id with at least level.
func (p *peer) remember(id gossip.ID, level uint8) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if have, ok := p.known[id]; ok {
		p.known[id] = max(have, level)
		return
	}
	p.rememberLocked(id, level)
}

func (p *peer) rememberLocked(id gossip.ID, level uint8) {
	if len(p.known) >= maxSentPerPeer {
		// Forget everything rather than grow: the next summary tells us
		// what the neighbour still lacks, and it drops duplicates itself.
		clear(p.known)
	}
	p.known[id] = level
}

func (p *peer) forget(id gossip.ID) {
	p.mu.Lock()
	delete(p.known, id)
	p.mu.Unlock()
}

func (p *peer) stopRaises() {
	p.mu.Lock()
	p.noRaise = true
	p.mu.Unlock()
}

// AddPeer starts pushing to a newly linked neighbour and returns a
// function that stops it (call it when the link goes down).
func (e *Engine) AddPeer(fp identity.Fingerprint, p Peer) (remove func()) {
	ctx, cancel := context.WithCancel(context.Background())
	pe := &peer{fp: fp, p: p, queue: make(chan gossip.ID, peerQueueLen), cancel: cancel, known: map[gossip.ID]uint8{}, retry: map[gossip.ID]struct{}{}, tokens: e.o.PeerBurst, last: e.o.Now()}
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		cancel()
		return func() {}
	}
	if old := e.peers[fp]; old != nil {
		old.cancel()
	}
	e.peers[fp] = pe
	e.mu.Unlock()
	e.wg.Add(1)
	go func() {
		defer e.wg.Done()
		e.sendLoop(ctx, pe)
	}()
	return func() {
		cancel()
		e.mu.Lock()
		if e.peers[fp] == pe {
			delete(e.peers, fp)
		}
		e.mu.Unlock()
	}
}

// Close stops every sender and wakes every waiter. Safe to call twice.
func (e *Engine) Close() {
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return
	}
	e.closed = true
	for _, p := range e.peers {
		p.cancel()
	}
	for _, ws := range e.waiters {
		for ch := range ws {
			select {
			case ch <- struct{}{}:
			default:
			}
		}
	}
	e.mu.Unlock()
	e.wg.Wait()
}

// Source names where an envelope came from, for quotas and for not
// echoing it back. Exactly one of Peer and Client is set.
type Source struct {
	Peer   identity.Fingerprint
	Client string // a per-connection label; never written to disk
}

func (s Source) quotaKey() string {
	if s.Client != "" {
		return "client " + s.Client
	}
	return "link " + s.Peer.String()
}

// Accept checks and stores an envelope and, when it is new, queues it for
// every neighbour except its source. added is false for duplicates.
func (e *Engine) Accept(env gossip.Envelope, src Source) (added bool, err error) {
	if src.Client == "" {
		if err := e.take(src.Peer); err != nil {
			return false, err
		}
	}
	switch env.Kind {
	case schemas.Envelope_Kind_receipt:
		secret, err := gossip.ReceiptSecret(env)
		if err != nil {
			return false, fmt.Errorf("%w: %v", ErrForged, err)
		}
		tag := gossip.ReceiptTag(secret)
		if n, err := e.o.Store.DeleteByReceiptTag(tag[:]); err != nil {
			return false, err
		} else if n > 0 {
			e.log.Debug("receipt deleted envelopes", "count", n)
		}
	case schemas.Envelope_Kind_bundle:
		if err := e.checkSigned(env, e.o.VerifyBundle); errors.Is(err, ErrStale) {
			return false, nil
		} else if err != nil {
			return false, err
		}
	case schemas.Envelope_Kind_descriptor:
		if err := e.checkSigned(env, e.o.VerifyDescriptor); errors.Is(err, ErrStale) {
			return false, nil
		} else if err != nil {
			return false, err
		}
	case schemas.Envelope_Kind_decoy:
		return false, nil // cover traffic: dropped on arrival
	case schemas.Envelope_Kind_broadcast:
		// Each broadcast is relayed once: a seen id is dropped before it
		// costs a store lookup (the set confirms a bloom hit exactly).
		env.HopLimit = min(env.HopLimit, e.o.MaxBroadcastHops)
		if e.seen.CheckAndAdd(env.ID) {
			if !src.Peer.IsZero() {
				e.markKnown(src.Peer, env.ID, heldBy(env))
			}
			e.raiseHops(env.ID, env.HopLimit, src.Peer, true)
			return false, nil
		}
	}
	added, err = e.o.Store.Put(env, src.quotaKey())
	if err != nil || !added {
		if !src.Peer.IsZero() && err == nil {
			e.markKnown(src.Peer, env.ID, heldBy(env))
		}
		if err == nil && env.Kind == schemas.Envelope_Kind_broadcast {
			// Stored already though the seen-set had forgotten it (or
			// tombstoned: raiseHops then finds it not held).
			e.raiseHops(env.ID, env.HopLimit, src.Peer, false)
		}
		return added, err
	}
	if !src.Peer.IsZero() {
		e.markKnown(src.Peer, env.ID, heldBy(env))
	}
	if env.Kind == schemas.Envelope_Kind_dm || env.Kind == schemas.Envelope_Kind_broadcast {
		e.wake(env.Destination)
	}
	if env.Kind == schemas.Envelope_Kind_descriptor && e.o.OnDescriptor != nil {
		if signed, err := gossip.SignedBytes(env); err == nil {
			e.o.OnDescriptor(signed)
		}
	}
	e.fanOut(env.ID, src.Peer)
	return true, nil
}

// heldBy is the hop limit the neighbour that sent env holds it with: one
// more than it sent, for a broadcast; knownAll for kinds never raised.
func heldBy(env gossip.Envelope) uint8 {
	if env.Kind != schemas.Envelope_Kind_broadcast {
		return knownAll
	}
	return plusOne(env.HopLimit)
}

// plusOne is h+1, saturating.
func plusOne(h uint8) uint8 {
	if h == knownAll {
		return h
	}
	return h + 1
}

// maxBoost bounds the broadcasts whose hop limit was raised. When it is
// reached, boosts of broadcasts no longer held are dropped first; only if
// that frees nothing is the map cleared (those broadcasts fall back to
// their stored hop limit).
const maxBoost = 1 << 14

// raiseHops handles a broadcast that we may now hold with hop limit hops:
// a copy arrived again with more hops left than the one held (the first
// came along a longer path), or a neighbour sent a raise. When that is
// more than we hold, the better limit is remembered and the id queued for
// every neighbour but from: sendLoop pushes the envelope to those that
// lack it (skipped before for lack of hops) and a raise to those that hold
// it with fewer hops than it can now give them, so a short path is never
// starved by a long one; no neighbour gets the envelope twice. Limits
// only rise, to at most MaxBroadcastHops, so the raises end.
//
// With pending set (the seen-set knows the id) the limit is remembered
// even when the store does not hold the id yet: a concurrent Accept of
// the first copy may be about to store it, and its fan-out then reads
// the raised limit.
func (e *Engine) raiseHops(id gossip.ID, hops uint8, from identity.Fingerprint, pending bool) {
	hops = min(hops, e.o.MaxBroadcastHops)
	held, ok, err := e.o.Store.Get(id)
	if err != nil || (!ok && !pending) {
		return
	}
	e.mu.Lock()
	cur := e.boost[id]
	if ok {
		cur = max(cur, held.HopLimit)
	}
	if hops <= cur {
		e.mu.Unlock()
		return
	}
	if len(e.boost) >= maxBoost {
		// Rare: PruneBoosts runs after every purge.
		clear(e.boost)
	}
	e.boost[id] = hops
	e.mu.Unlock()
	e.fanOut(id, from)
}

// PruneBoosts forgets raised hop limits of broadcasts no longer held
// (expired or deleted, or never stored); the node calls it after each
// purge. The store is read without holding the engine's lock.
func (e *Engine) PruneBoosts() (dropped int) {
	e.mu.Lock()
	ids := make([]gossip.ID, 0, len(e.boost))
	for id := range e.boost {
		ids = append(ids, id)
	}
	e.mu.Unlock()
	var gone []gossip.ID
	for _, id := range ids {
		// Get, not Has: Has also answers for tombstones.
		if _, ok, err := e.o.Store.Get(id); err == nil && !ok {
			gone = append(gone, id)
		}
	}
	e.mu.Lock()
	for _, id := range gone {
		delete(e.boost, id)
	}
	e.mu.Unlock()
	return len(gone)
}

// HandleRaise applies a raise notice from neighbour fp: each entry costs
// one token of its rate budget (ErrRateLimited ends the call); entries
// for ids not held here, or not broadcasts, are ignored.
func (e *Engine) HandleRaise(fp identity.Fingerprint, raises []HopRaise) error {
	for _, r := range raises {
		if err := e.take(fp); err != nil {
			return err
		}
		env, ok, err := e.o.Store.Get(r.ID)
		if err != nil {
			return err
		}
		// Not stored yet but seen: the first copy is being stored right
		// now (the seen-set holds broadcasts only).
		if (ok && env.Kind != schemas.Envelope_Kind_broadcast) || (!ok && !e.seen.Seen(r.ID)) {
			continue
		}
		hops := min(r.HopLimit, e.o.MaxBroadcastHops)
		e.markKnown(fp, r.ID, plusOne(hops))
		e.raiseHops(r.ID, hops, fp, true)
	}
	return nil
}

// checkSigned verifies a bundle or descriptor envelope and drops older
// records of the same owner; one no newer than what is stored is refused
// with ErrStale.
func (e *Engine) checkSigned(env gossip.Envelope, verify BundleVerifier) error {
	signed, err := gossip.SignedBytes(env)
	if err != nil {
		return err
	}
	if verify == nil {
		return fmt.Errorf("%w: node cannot verify %s envelopes", ErrForged, env.Kind)
	}
	fp, seq, err := verify(signed)
	if err != nil {
		return fmt.Errorf("%w: %s: %v", ErrForged, env.Kind, err)
	}
	if !fp.Equal(identity.Fingerprint(env.Destination)) {
		return fmt.Errorf("%w: %s of %s addressed to %x", ErrForged, env.Kind, fp, env.Destination)
	}
	old, err := e.held(env.Destination, env.Kind)
	if err != nil {
		return err
	}
	for _, o := range old {
		if o.ID == env.ID {
			continue
		}
		b, err := gossip.SignedBytes(o)
		if err != nil {
			continue
		}
		if _, oseq, err := verify(b); err == nil && oseq >= seq {
			return ErrStale
		}
	}
	for _, o := range old {
		if o.ID != env.ID {
			e.o.Store.Delete(o.ID)
		}
	}
	return nil
}

// ErrNotLinked: a summary came from a neighbour whose link is not
// registered (yet).
var ErrNotLinked = errors.New("summary from a neighbour not linked yet")

// ErrStale: a bundle or descriptor no newer than one already held.
var ErrStale = errors.New("an equal or newer bundle is held")

func (e *Engine) held(dest []byte, kind schemas.Envelope_Kind) ([]gossip.Envelope, error) {
	all, err := e.o.Store.Mailbox(dest, 0)
	if err != nil {
		return nil, err
	}
	var out []gossip.Envelope
	for _, x := range all {
		if x.Kind == kind {
			out = append(out, x)
		}
	}
	return out, nil
}

// Bundle returns the newest SignedBundle held for a user, or nil.
func (e *Engine) Bundle(fp identity.Fingerprint) ([]byte, error) {
	bs, err := e.held(fp[:], schemas.Envelope_Kind_bundle)
	if err != nil {
		return nil, err
	}
	var best []byte
	var bestSeq uint64
	for _, b := range bs {
		signed, err := gossip.BundleBytes(b)
		if err != nil {
			continue
		}
		if _, seq, err := e.o.VerifyBundle(signed); err == nil && (best == nil || seq > bestSeq) {
			best, bestSeq = signed, seq
		}
	}
	return best, nil
}

// Mailbox returns up to limit dms addressed to user, oldest first, and
// at most maxBytes of payload (at least one envelope).
func (e *Engine) Mailbox(user identity.Fingerprint, limit, maxBytes int) ([]gossip.Envelope, error) {
	all, err := e.o.Store.Mailbox(user[:], 0)
	if err != nil {
		return nil, err
	}
	var out []gossip.Envelope
	size := 0
	for _, x := range all {
		if x.Kind != schemas.Envelope_Kind_dm {
			continue
		}
		if len(out) > 0 && size+len(x.Payload) > maxBytes {
			break
		}
		out = append(out, x)
		size += len(x.Payload)
		if limit > 0 && len(out) == limit {
			break
		}
	}
	return out, nil
}

// Channel returns broadcasts held for the given channel ids, oldest
// first: for channel i those held after the envelope after[i], or the
// newest limit when after[i] is zero or no longer held. At most limit
// envelopes and maxBytes of payload per call (at least one envelope).
func (e *Engine) Channel(ids [][32]byte, after []gossip.ID, limit, maxBytes int) ([]gossip.Envelope, error) {
	var out []gossip.Envelope
	size := 0
	for i, id := range ids {
		all, err := e.o.Store.Mailbox(id[:], 0)
		if err != nil {
			return nil, err
		}
		var bs []gossip.Envelope
		for _, x := range all {
			if x.Kind == schemas.Envelope_Kind_broadcast {
				bs = append(bs, x)
			}
		}
		start := max(0, len(bs)-limit)
		if i < len(after) && after[i] != (gossip.ID{}) {
			for j, x := range bs {
				if x.ID == after[i] {
					start = j + 1
					break
				}
			}
		}
		for _, x := range bs[start:] {
			if len(out) > 0 && (size+len(x.Payload) > maxBytes || len(out) == limit) {
				return out, nil
			}
			out = append(out, x)
			size += len(x.Payload)
		}
	}
	return out, nil
}

// Ack applies receipt secrets revealed by a recipient: deletes the tagged
// envelopes here and spreads a receipt so every node deletes its copy.
func (e *Engine) Ack(secrets [][]byte) (deleted int, err error) {
	for _, k := range secrets {
		r, err := gossip.NewReceipt(k, uint32(e.o.ReceiptTTL/time.Second), e.o.ReceiptHops)
		if err != nil {
			return deleted, err
		}
		n, err := e.o.Store.DeleteByReceiptTag(r.Destination)
		if err != nil {
			return deleted, err
		}
		deleted += n
		if _, err := e.Accept(r, Source{Client: "local"}); err != nil {
			return deleted, err
		}
	}
	return deleted, nil
}

// Wait returns a channel that is signalled when a dm for dest arrives,
// and a function to stop waiting.
func (e *Engine) Wait(dest []byte) (<-chan struct{}, func()) {
	var key [32]byte
	copy(key[:], dest)
	ch := make(chan struct{}, 1)
	e.mu.Lock()
	if e.waiters[key] == nil {
		e.waiters[key] = map[chan struct{}]struct{}{}
	}
	e.waiters[key][ch] = struct{}{}
	e.mu.Unlock()
	return ch, func() {
		e.mu.Lock()
		delete(e.waiters[key], ch)
		if len(e.waiters[key]) == 0 {
			delete(e.waiters, key)
		}
		e.mu.Unlock()
	}
}

func (e *Engine) wake(dest []byte) {
	var key [32]byte
	copy(key[:], dest)
	e.mu.Lock()
	defer e.mu.Unlock()
	for ch := range e.waiters[key] {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}

// take spends one token of a neighbour's rate budget.
func (e *Engine) take(fp identity.Fingerprint) error {
	e.mu.Lock()
	p := e.peers[fp]
	e.mu.Unlock()
	if p == nil {
		return nil
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	now := e.o.Now()
	p.tokens = min(e.o.PeerBurst, p.tokens+now.Sub(p.last).Seconds()*e.o.PeerRate)
	p.last = now
	if p.tokens < 1 {
		return ErrRateLimited
	}
	p.tokens--
	return nil
}

func (e *Engine) markKnown(fp identity.Fingerprint, id gossip.ID, level uint8) {
	e.mu.Lock()
	p := e.peers[fp]
	e.mu.Unlock()
	if p != nil {
		p.remember(id, level)
	}
}

// fanOut queues id for every neighbour except the one it came from.
func (e *Engine) fanOut(id gossip.ID, except identity.Fingerprint) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for fp, p := range e.peers {
		if fp == except {
			continue
		}
		select {
		case p.queue <- id:
		default:
			// Full: the next summary exchange carries it instead.
			e.log.Debug("push queue full; left to anti-entropy", "peer", fp)
		}
	}
}

// sendLoop drains one neighbour's queue in batches: the envelopes it
// lacks in one push, then the raises for those it holds with fewer hops
// in one raise call. A raise therefore never overtakes the push of its
// envelope, which the neighbour has stored by the time push returns.
func (e *Engine) sendLoop(ctx context.Context, p *peer) {
	batch := make([]gossip.Envelope, 0, pushBatch)
	raises := make([]HopRaise, 0, raiseBatch)
	prev := make([]uint8, 0, raiseBatch) // each raise's level before its claim
	for {
		var id gossip.ID
		select {
		case <-ctx.Done():
			return
		case id = <-p.queue:
		}
		batch, raises, prev = batch[:0], raises[:0], prev[:0]
		size := 0
		for {
			switch env, what, was := e.forwardable(p, id); what {
			case offerPush:
				batch = append(batch, env)
				size += len(env.Payload)
			case offerRaise:
				raises = append(raises, HopRaise{ID: id, HopLimit: env.HopLimit})
				prev = append(prev, was)
			}
			if len(batch) == pushBatch || size >= pushBytes || len(raises) == raiseBatch {
				break
			}
			select {
			case id = <-p.queue:
				continue
			default:
			}
			break
		}
		if len(batch) > 0 {
			e.push(ctx, p, batch)
		}
		if len(raises) > 0 {
			e.raise(ctx, p, raises, prev)
		}
	}
}

func (e *Engine) push(ctx context.Context, p *peer, batch []gossip.Envelope) {
	pctx, cancel := context.WithTimeout(ctx, pushTimeout)
	_, err := p.p.Push(pctx, batch)
	cancel()
	if err != nil {
		if ctx.Err() == nil {
			e.log.Debug("push failed", "peer", p.fp, "count", len(batch), "err", err)
		}
		// The envelopes stay stored; the next summary asks again.
		for _, env := range batch {
			p.forget(env.ID)
		}
	}
}

func (e *Engine) raise(ctx context.Context, p *peer, raises []HopRaise, prev []uint8) {
	rctx, cancel := context.WithTimeout(ctx, pushTimeout)
	err := p.p.Raise(rctx, raises)
	cancel()
	switch {
	case err == nil || ctx.Err() != nil:
	case errors.Is(err, ErrRaiseUnsupported):
		// An older node: it keeps the hop limits it has, as before raises.
		e.log.Debug("peer does not serve raise; sending it none", "peer", p.fp, "err", err)
		p.stopRaises()
	default:
		// Lost or refused (rate limit): our record goes back to what the
		// neighbour is known to hold, and the next summary round, which
		// looks for boosted broadcasts held with fewer hops, offers it
		// again.
		e.log.Debug("raise failed", "peer", p.fp, "count", len(raises), "err", err)
		for i, r := range raises {
			p.unclaim(r.ID, r.HopLimit, prev[i])
		}
	}
}

// forwardable says what p should get for id, and returns the envelope as
// it would go to p (still stored, with hops left, hop limit decremented):
// offerPush when p lacks it, offerRaise when p holds a broadcast with
// fewer hops than that, offerNone otherwise.
func (e *Engine) forwardable(p *peer, id gossip.ID) (env gossip.Envelope, what int, prev uint8) {
	if p.settled(id, e.o.MaxBroadcastHops) {
		return gossip.Envelope{}, offerNone, 0 // no store read needed
	}
	env, ok, err := e.o.Store.Get(id)
	if err != nil || !ok {
		return gossip.Envelope{}, offerNone, 0
	}
	e.mu.Lock()
	env.HopLimit = max(env.HopLimit, e.boost[id])
	e.mu.Unlock()
	if env.HopLimit == 0 || env.TTLSeconds == 0 {
		return gossip.Envelope{}, offerNone, 0
	}
	env.HopLimit--
	level := knownAll
	if env.Kind == schemas.Envelope_Kind_broadcast {
		level = env.HopLimit
	}
	// Claimed now, not after the push: the same id queued twice (a hop
	// limit raised meanwhile) must not go out twice in one batch.
	what, prev = p.offer(id, level)
	return env, what, prev
}

// MakeSummary builds a digest of every id held, under a fresh key.
func (e *Engine) MakeSummary() (Summary, error) {
	var ids []gossip.ID
	err := e.o.Store.IDs(func(id gossip.ID, kind schemas.Envelope_Kind) bool {
		ids = append(ids, id)
		return len(ids) < maxSummaryIDs
	})
	if err != nil {
		return Summary{}, err
	}
	key := make([]byte, summaryKeyLen)
	rand.Read(key)
	f := bloom.NewWithEstimates(uint(max(len(ids), 64)), summaryFPRate)
	buf := make([]byte, summaryKeyLen+gossip.IDLen)
	copy(buf, key)
	for _, id := range ids {
		copy(buf[summaryKeyLen:], id[:])
		f.Add(buf)
	}
	b, err := f.MarshalBinary()
	if err != nil {
		return Summary{}, err
	}
	return Summary{Filter: b, Key: key, Count: uint32(len(ids))}, nil
}

// SendSummary offers our digest to a neighbour, which pushes back what we
// lack.
func (e *Engine) SendSummary(ctx context.Context, fp identity.Fingerprint) error {
	e.mu.Lock()
	p := e.peers[fp]
	e.mu.Unlock()
	if p == nil {
		return nil
	}
	s, err := e.MakeSummary()
	if err != nil {
		return err
	}
	return p.p.Summary(ctx, s)
}

// HandleSummary queues for neighbour fp every envelope its digest shows
// it lacks.
func (e *Engine) HandleSummary(fp identity.Fingerprint, s Summary) error {
	if len(s.Key) != summaryKeyLen {
		return fmt.Errorf("summary key is %d bytes, want %d", len(s.Key), summaryKeyLen)
	}
	if len(s.Filter) > MaxFilterBytes {
		return fmt.Errorf("summary filter is %d bytes, over %d", len(s.Filter), MaxFilterBytes)
	}
	var f bloom.BloomFilter
	if err := f.UnmarshalBinary(s.Filter); err != nil {
		return fmt.Errorf("summary filter: %w", err)
	}
	if f.Cap() == 0 || f.K() == 0 || f.K() > 64 {
		return fmt.Errorf("summary filter has %d bits and %d hashes", f.Cap(), f.K())
	}
	e.mu.Lock()
	p := e.peers[fp]
	e.mu.Unlock()
	if p == nil {
		// The link is up on the sender's side but not yet registered on
		// ours: the sender tries again shortly.
		return ErrNotLinked
	}
	// Raises that were lost or refused since the last round go again;
	// sendLoop sends each only if the neighbour still holds fewer hops.
	for _, id := range p.takeRetries() {
		select {
		case p.queue <- id:
		default:
		}
	}
	buf := make([]byte, summaryKeyLen+gossip.IDLen)
	copy(buf, s.Key)
	return e.o.Store.IDs(func(id gossip.ID, kind schemas.Envelope_Kind) bool {
		copy(buf[summaryKeyLen:], id[:])
		if f.Test(buf) {
			// It has it, or this is a false positive: not remembered, so
			// the next round, under a fresh key, catches it.
			return true
		}
		// The digest is fresher than our record of what we sent: a push
		// that was lost after it looked delivered is sent again.
		p.forget(id)
		select {
		case p.queue <- id:
			return true
		default:
			return false // queue full: the next round continues
		}
	})
}
