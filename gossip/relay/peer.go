package relay

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/quicproquo/qpq/gossip"
	"github.com/quicproquo/qpq/mesh/identity"
	"github.com/quicproquo/qpq/schemas"
)

const (
	pushTimeout = 20 * time.Second
	// retryFirst and retryMax pace pushes to a neighbour that refuses
	// them without saying when to come back (an older node's rate
	// limit error): the wait doubles from the first to the last.
	retryFirst     = 250 * time.Millisecond
	retryMax       = 10 * time.Second
	maxSentPerPeer = 1 << 17 // ids remembered per neighbour (~4 MiB at worst)
	// maxRetryRaises bounds the raises remembered per neighbour for the
	// next summary round; past it a lost raise is not offered again.
	maxRetryRaises = 4096
	// knownAll is the level recorded for an id whose kind is never raised
	// (everything but broadcasts): nothing is ever above it.
	knownAll = ^uint8(0)
)

// peer is one neighbour's sender: a bounded queue of ids drained by one
// goroutine, and the ids it already has (sent to it, or received from it)
// with the hop limit it is known to hold each with.
type peer struct {
	fp     identity.Fingerprint
	p      Peer
	linked time.Time // when added, by the rounds' clock (ownBuckets)
	queue  *idQueue
	ctx    context.Context // done when the neighbour is removed
	cancel context.CancelFunc

	mu sync.Mutex // guards the fields below
	// known maps an id the neighbour has to the least hop limit it holds
	// it with: for one we sent, the decremented limit we sent; for one it
	// sent us, the limit received plus one; knownAll for kinds that are
	// never raised.
	known   map[gossip.ID]uint8
	retry   map[gossip.ID]struct{} // raises to offer again (lost or refused)
	noRaise bool                   // the neighbour does not serve raise
	tokens  float64                // envelope and raise budget (PeerRate, PeerBurst)
	last    time.Time              // when tokens was last refilled
	// credit is budget beyond tokens for envelopes we asked for: each
	// summary we send the neighbour invites it to push what we lack,
	// so a new neighbour catches up at the link's pace, not PeerRate's.
	credit float64
	// sumTokens is the summary budget: summaryBurst, one more per
	// SummaryGap.
	sumTokens float64
	sumLast   time.Time
	// rests are received summaries whose scan stopped for lack of room
	// (catchup.go).
	rests []*scanRest
}

// takeSummary spends one summary token, if there is one.
func (p *peer) takeSummary(now time.Time, gap time.Duration) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.sumTokens = min(summaryBurst, p.sumTokens+now.Sub(p.sumLast).Seconds()/gap.Seconds())
	p.sumLast = now
	if p.sumTokens < 1 {
		return false
	}
	p.sumTokens--
	return true
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
	pe := &peer{fp: fp, p: p, queue: newIDQueue(), ctx: ctx, cancel: cancel, known: map[gossip.ID]uint8{}, retry: map[gossip.ID]struct{}{}, tokens: e.o.PeerBurst, last: e.o.Now(), sumTokens: summaryBurst, sumLast: e.o.Now(), linked: e.aeNow()}
	e.peersMu.Lock()
	if e.closed {
		e.peersMu.Unlock()
		cancel()
		return func() {}
	}
	if old := e.peers[fp]; old != nil {
		old.cancel()
	}
	e.peers[fp] = pe
	// Counted under the lock, after the closed check: Close cannot reach
	// its Wait between them, so no sender outlives it.
	e.wg.Add(1)
	go func() {
		defer e.wg.Done()
		e.sendLoop(ctx, pe)
	}()
	if e.runCtx != nil {
		e.startSyncLocked(pe)
	}
	e.peersMu.Unlock()
	return func() {
		cancel()
		e.peersMu.Lock()
		if e.peers[fp] == pe {
			delete(e.peers, fp)
		}
		e.peersMu.Unlock()
	}
}

// take spends one token of a neighbour's rate budget.
func (e *Engine) take(fp identity.Fingerprint) error {
	if n, _ := e.takeUpTo(fp, 1); n == 0 {
		return ErrRateLimited
	}
	return nil
}

// takeUpTo spends up to n tokens of a neighbour's budget (its invited
// credit first) and returns how many it got; when fewer than n, wait is
// how long until the rest (at most one push batch of it) would be there.
func (e *Engine) takeUpTo(fp identity.Fingerprint, n int) (got int, wait time.Duration) {
	p := e.peer(fp)
	if p == nil {
		return n, 0
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	now := e.o.Now()
	p.tokens = min(e.o.PeerBurst, p.tokens+now.Sub(p.last).Seconds()*e.o.PeerRate)
	p.last = now
	for got < n && p.credit >= 1 {
		p.credit--
		got++
	}
	for got < n && p.tokens >= 1 {
		p.tokens--
		got++
	}
	if got == n {
		return got, 0
	}
	need := float64(min(n-got, pushBatch)) - p.tokens
	return got, time.Duration(need / e.o.PeerRate * float64(time.Second))
}

// invite grants neighbour fp credit for n envelopes beyond its rate: we
// just asked it (with a summary) for what we lack. Credit does not pile
// up past one round's worth.
func (e *Engine) invite(fp identity.Fingerprint, n int) {
	if p := e.peer(fp); p != nil {
		p.mu.Lock()
		p.credit = min(float64(n), p.credit+float64(n))
		p.mu.Unlock()
	}
}

func (e *Engine) markKnown(fp identity.Fingerprint, id gossip.ID, level uint8) {
	p := e.peer(fp)
	if p != nil {
		p.remember(id, level)
	}
}

// fanOut queues id for every neighbour except the one it came from.
func (e *Engine) fanOut(id gossip.ID, except identity.Fingerprint) {
	e.peersMu.Lock()
	defer e.peersMu.Unlock()
	for fp, p := range e.peers {
		if fp == except {
			continue
		}
		if !p.queue.push(id) {
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
		id, ok := p.queue.tryPop()
		if !ok && e.finishScans(p) {
			// Drained: the rest of a summary's scan refilled it.
			id, ok = p.queue.tryPop()
		}
		if !ok {
			if id, ok = p.queue.pop(ctx); !ok {
				return
			}
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
			if id, ok = p.queue.tryPop(); ok {
				continue
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

// push sends batch to p at the pace p asks for: what it did not take it
// gets again once it said it may (flow control), or, from an older node
// that refuses with a rate-limit error, after a wait that doubles. Only a
// push that fails otherwise (link lost, timeout) is left to the next
// summary round.
func (e *Engine) push(ctx context.Context, p *peer, batch []gossip.Envelope) {
	backoff := retryFirst
	for len(batch) > 0 {
		pctx, cancel := context.WithTimeout(ctx, pushTimeout)
		res, err := p.p.Push(pctx, batch)
		cancel()
		var wait time.Duration
		switch {
		case err == nil:
			if res.Taken <= 0 && res.RetryAfter <= 0 {
				return // an answer without flow control: all taken
			}
			batch = batch[min(max(res.Taken, 0), len(batch)):]
			if len(batch) == 0 {
				return
			}
			wait, backoff = max(res.RetryAfter, time.Millisecond), retryFirst
			e.pushWaits.Add(1)
		case IsRateLimited(err) && ctx.Err() == nil:
			wait, backoff = backoff, min(2*backoff, retryMax)
			e.pushWaits.Add(1)
		default:
			if ctx.Err() == nil {
				e.log.Debug("push failed", "peer", p.fp, "count", len(batch), "err", err)
			}
			// The envelopes stay stored; the next summary asks again.
			for _, env := range batch {
				p.forget(env.ID)
			}
			return
		}
		select {
		case <-ctx.Done():
			for _, env := range batch {
				p.forget(env.ID)
			}
			return
		case <-e.o.After(min(wait, retryMax)):
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
	if p.settled(id, e.o.MaxBroadcastHops) || e.holds.has(id) {
		return gossip.Envelope{}, offerNone, 0 // no store read needed
	}
	env, ok, err := e.o.Store.Get(id)
	if err != nil || !ok {
		return gossip.Envelope{}, offerNone, 0
	}
	e.boostMu.Lock()
	env.HopLimit = max(env.HopLimit, e.boost[id])
	e.boostMu.Unlock()
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
