// Package relay is store and forward between linked nodes: it accepts
// envelopes from clients and neighbours into the store, pushes each new
// one once to every neighbour except the one it came from, runs
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

// Errors Accept returns.
var (
	ErrRateLimited = errors.New("peer is sending too fast")
	ErrForged      = errors.New("forged or mismatched envelope")
)

const (
	summaryKeyLen = 16
	maxSummaryIDs = 1 << 20
	summaryFPRate = 0.01
	pushBatch     = 32
	// pushBytes bounds one push's payloads, well under the RPC message
	// bound (link.MaxRPCMessage) even with one maximal envelope added.
	pushBytes      = 96 << 10
	pushTimeout    = 20 * time.Second
	peerQueueLen   = 4096
	maxSentPerPeer = 1 << 17 // ids remembered per neighbour (~4 MiB at worst)
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
// goroutine, and the ids it already has (sent to it, or received from it).
type peer struct {
	fp     identity.Fingerprint
	p      Peer
	queue  chan gossip.ID
	cancel context.CancelFunc

	mu     sync.Mutex // guards the fields below
	sent   map[gossip.ID]struct{}
	tokens float64
	last   time.Time
}

func (p *peer) knows(id gossip.ID) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	_, ok := p.sent[id]
	return ok
}

func (p *peer) remember(id gossip.ID) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.sent) >= maxSentPerPeer {
		// Forget everything rather than grow: the next summary tells us
		// what the neighbour still lacks, and it drops duplicates itself.
		clear(p.sent)
	}
	p.sent[id] = struct{}{}
}

func (p *peer) forget(id gossip.ID) {
	p.mu.Lock()
	delete(p.sent, id)
	p.mu.Unlock()
}

// AddPeer starts pushing to a newly linked neighbour and returns a
// function that stops it (call it when the link goes down).
func (e *Engine) AddPeer(fp identity.Fingerprint, p Peer) (remove func()) {
	ctx, cancel := context.WithCancel(context.Background())
	pe := &peer{fp: fp, p: p, queue: make(chan gossip.ID, peerQueueLen), cancel: cancel, sent: map[gossip.ID]struct{}{}, tokens: e.o.PeerBurst, last: e.o.Now()}
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
				e.markKnown(src.Peer, env.ID)
			}
			e.improveHops(env, src.Peer)
			return false, nil
		}
	}
	added, err = e.o.Store.Put(env, src.quotaKey())
	if err != nil || !added {
		if !src.Peer.IsZero() && err == nil {
			e.markKnown(src.Peer, env.ID)
		}
		return added, err
	}
	if !src.Peer.IsZero() {
		e.markKnown(src.Peer, env.ID)
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

// maxBoost bounds the broadcasts whose hop limit was raised; past it the
// map is cleared (those broadcasts fall back to their stored hop limit).
const maxBoost = 1 << 14

// improveHops handles a broadcast that arrives again with more hops left
// than the copy held: it first came along a longer path. The better limit
// is remembered and the broadcast offered again to neighbours that do not
// have it yet (those skipped for lack of hops), so a short path is never
// starved by a long one; no neighbour gets it twice.
func (e *Engine) improveHops(env gossip.Envelope, from identity.Fingerprint) {
	held, ok, err := e.o.Store.Get(env.ID)
	if err != nil || !ok {
		return
	}
	e.mu.Lock()
	cur := max(held.HopLimit, e.boost[env.ID])
	if env.HopLimit <= cur {
		e.mu.Unlock()
		return
	}
	if len(e.boost) >= maxBoost {
		clear(e.boost)
	}
	e.boost[env.ID] = env.HopLimit
	e.mu.Unlock()
	e.fanOut(env.ID, from)
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

func (e *Engine) markKnown(fp identity.Fingerprint, id gossip.ID) {
	e.mu.Lock()
	p := e.peers[fp]
	e.mu.Unlock()
	if p != nil {
		p.remember(id)
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

// sendLoop drains one neighbour's queue in batches.
func (e *Engine) sendLoop(ctx context.Context, p *peer) {
	batch := make([]gossip.Envelope, 0, pushBatch)
	for {
		var id gossip.ID
		select {
		case <-ctx.Done():
			return
		case id = <-p.queue:
		}
		batch = batch[:0]
		size := 0
		for {
			if env, ok := e.forwardable(p, id); ok {
				batch = append(batch, env)
				size += len(env.Payload)
			}
			if len(batch) == pushBatch || size >= pushBytes {
				break
			}
			select {
			case id = <-p.queue:
				continue
			default:
			}
			break
		}
		if len(batch) == 0 {
			continue
		}
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
}

// forwardable returns the envelope as it should go to p: still stored,
// not already known to p, with hops left, hop limit decremented.
func (e *Engine) forwardable(p *peer, id gossip.ID) (gossip.Envelope, bool) {
	if p.knows(id) {
		return gossip.Envelope{}, false
	}
	env, ok, err := e.o.Store.Get(id)
	if err != nil || !ok {
		return gossip.Envelope{}, false
	}
	e.mu.Lock()
	env.HopLimit = max(env.HopLimit, e.boost[id])
	e.mu.Unlock()
	if env.HopLimit == 0 || env.TTLSeconds == 0 {
		return gossip.Envelope{}, false
	}
	env.HopLimit--
	// Claimed now, not after the push: the same id queued twice (a hop
	// limit raised meanwhile) must not go out twice in one batch.
	p.remember(id)
	return env, true
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

// maxFilterBytes bounds a received filter (a million ids at 1% is ~1.2 MB;
// the RPC message bound is lower still).
const maxFilterBytes = 2 << 20

// HandleSummary queues for neighbour fp every envelope its digest shows
// it lacks.
func (e *Engine) HandleSummary(fp identity.Fingerprint, s Summary) error {
	if len(s.Key) != summaryKeyLen {
		return fmt.Errorf("summary key is %d bytes, want %d", len(s.Key), summaryKeyLen)
	}
	if len(s.Filter) > maxFilterBytes {
		return fmt.Errorf("summary filter is %d bytes, over %d", len(s.Filter), maxFilterBytes)
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
		return nil
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
