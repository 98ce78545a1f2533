package relay

import (
	"bytes"
	"context"
	"fmt"
	"math"
	"time"

	"github.com/quicproquo/qpq/gossip"
	"github.com/quicproquo/qpq/mesh/identity"
	"github.com/quicproquo/qpq/schemas"
)

const (
	// summaryRetry is the first wait after a failed summary (doubling up
	// to SummaryInterval): the neighbour may not have registered the link
	// yet when ours is up.
	summaryRetry   = time.Second
	summaryTimeout = 30 * time.Second
	// summaryBurst is how many summaries a neighbour may send at once
	// (link-up and quick retries) before SummaryGap paces it.
	summaryBurst  = 3
	summaryKeyLen = 16
	// maxSummaryIDs caps the ids of a whole-store summary (the form a
	// version-1 neighbour gets): 190k ids at summaryFPRate is a 223 KiB
	// filter, under the RPC message bound (link.MaxRPCMessage, 256 KiB)
	// with room for the call, where more would be refused whole. The ids
	// left out look missing to that neighbour, which then pushes back
	// those it holds (bounded by its MaxSummaryPush); version-2
	// neighbours get partial summaries instead and need no cap.
	maxSummaryIDs = 190_000
	summaryFPRate = 0.01
)

// Summary is an anti-entropy digest (schemas.Summary in Go form).
type Summary struct {
	Filter []byte // bloom/v3 MarshalBinary
	Key    []byte // prepended to each id before it is added
	Count  uint32
	// Start and End bound a partial summary (protocol version 2): it
	// holds the ids in [Start, End), each bound an id or empty (the start,
	// the end of the id space). Both empty: the whole store.
	Start, End []byte
	// Digest is the XOR of the summary's ids (32 bytes; version 2), or
	// empty: a receiver that holds the same ids there (by its own bucket
	// table, see ae.go) skips reading them.
	Digest []byte
}

// MakeSummary builds a whole-store digest (the version-1 form) of the
// ids held, at most maxSummaryIDs of them, under a fresh key. The links'
// rounds share one (see round).
func (e *Engine) MakeSummary() (Summary, error) {
	var ids []gossip.ID
	err := e.o.Store.IDs(func(id gossip.ID, kind schemas.Envelope_Kind) bool {
		ids = append(ids, id)
		return len(ids) < maxSummaryIDs
	})
	if err != nil {
		return Summary{}, err
	}
	key := newSummaryKey()
	b, err := filterOfIDs(key, ids)
	if err != nil {
		return Summary{}, err
	}
	return Summary{Filter: b, Key: key, Count: uint32(len(ids))}, nil
}

// startSyncLocked starts p's summary loop under Run's context; peersMu
// is held, so Close cannot run between the check and wg.Add.
func (e *Engine) startSyncLocked(p *peer) {
	ctx := e.runCtx
	e.wg.Add(1)
	go func() {
		defer e.wg.Done()
		e.syncLoop(ctx, p)
	}()
}

// syncLoop runs anti-entropy with one neighbour: a summary at once, then
// one every SummaryInterval, until the neighbour is removed or Run ends.
// A failed summary is retried soon (1 s, doubling).
func (e *Engine) syncLoop(ctx context.Context, p *peer) {
	retry := summaryRetry
	for {
		sctx, cancel := context.WithTimeout(ctx, summaryTimeout)
		err := e.sendSummary(sctx, p, false)
		cancel()
		wait := e.o.SummaryInterval
		if err != nil && ctx.Err() == nil && p.ctx.Err() == nil {
			e.log.Debug("summary failed", "peer", p.fp, "err", err)
			if retry < e.o.SummaryInterval {
				wait, retry = retry, retry*2
			}
		} else {
			retry = summaryRetry
		}
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-p.ctx.Done():
			t.Stop()
			return
		case <-ctx.Done():
			t.Stop()
			return
		}
	}
}

// SendSummary offers our digest to a neighbour, which pushes back what we
// lack.
func (e *Engine) SendSummary(ctx context.Context, fp identity.Fingerprint) error {
	p := e.peer(fp)
	if p == nil {
		return nil
	}
	return e.sendSummary(ctx, p, true)
}

// sendSummary sends p the current round in the form its protocol
// version reads (see round); force rebuilds it if the store changed.
func (e *Engine) sendSummary(ctx context.Context, p *peer, force bool) error {
	v := peerVersion(p.p)
	sums, err := e.round(v, force)
	if err != nil {
		return fmt.Errorf("summary: %w", err)
	}
	for i, s := range sums {
		if err := p.p.Summary(ctx, s); err != nil {
			return fmt.Errorf("summary %d of %d: %w", i+1, len(sums), err)
		}
	}
	// The neighbour now pushes what we lack: let it, at the link's pace.
	e.invite(p.fp, e.o.MaxSummaryPush)
	return nil
}

// HandleSummary queues for neighbour fp every envelope its digest shows
// it lacks: of the whole store, or for a partial summary (Start, End) of
// only that id range, which is all that is read.
func (e *Engine) HandleSummary(fp identity.Fingerprint, s Summary) error {
	f, r, err := parseSummary(s)
	if err != nil {
		return err
	}
	p := e.peer(fp)
	if p == nil {
		// The link is up on the sender's side but not yet registered on
		// ours: the sender tries again shortly.
		return ErrNotLinked
	}
	// Each summary can make us resend what the neighbour lacks: paced per
	// neighbour, and bounded per call, so a peer that claims to lack
	// everything cannot turn the node into a firehose.
	// A partial summary is charged its share of the id space: a round of
	// them costs what one whole summary does.
	share := r.share()
	if !p.takeSummaryShare(e.o.Now(), e.o.SummaryGap, share) {
		return fmt.Errorf("%w: summaries more often than one per %v", ErrRateLimited, e.o.SummaryGap)
	}
	// Raises that were lost or refused since the last round go again;
	// sendLoop sends each only if the neighbour still holds fewer hops.
	for _, id := range p.takeRetries() {
		p.queue.push(id)
	}
	buf := make([]byte, summaryKeyLen+gossip.IDLen)
	copy(buf, s.Key)
	if len(s.Digest) == gossip.IDLen {
		if t := e.ownBuckets(p); t != nil {
			if d, n, ok := t.digest(r); ok && n == s.Count && bytes.Equal(d[:], s.Digest) {
				// Both sides hold the same ids in the range (as of our
				// last round): nothing to test. What either got since
				// was pushed, or goes in a later round.
				return nil
			}
		}
	}
	most := max(1, int(math.Ceil(share*float64(e.o.MaxSummaryPush))))
	// The filter and key point into the RPC message: kept only as copies.
	rest := &scanRest{f: f, key: bytes.Clone(s.Key), r: idRange{start: bytes.Clone(r.start), end: bytes.Clone(r.end)}}
	return e.scanSummary(p, rest, most, true)
}
