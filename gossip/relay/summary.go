package relay

import (
	"context"
	"crypto/rand"
	"fmt"
	"time"

	"github.com/bits-and-blooms/bloom/v3"

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
	maxSummaryIDs = 1 << 20
	summaryFPRate = 0.01
)

// Summary is an anti-entropy digest (schemas.Summary in Go form).
type Summary struct {
	Filter []byte // bloom/v3 MarshalBinary
	Key    []byte // prepended to each id before it is added
	Count  uint32
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
		err := e.sendSummary(sctx, p)
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
	return e.sendSummary(ctx, p)
}

func (e *Engine) sendSummary(ctx context.Context, p *peer) error {
	s, err := e.MakeSummary()
	if err != nil {
		return err
	}
	if err := p.p.Summary(ctx, s); err != nil {
		return err
	}
	// The neighbour now pushes what we lack: let it, at the link's pace.
	e.invite(p.fp, e.o.MaxSummaryPush)
	return nil
}

// HandleSummary queues for neighbour fp every envelope its digest shows
// it lacks.
func (e *Engine) HandleSummary(fp identity.Fingerprint, s Summary) error {
	if len(s.Key) != summaryKeyLen {
		return fmt.Errorf("%w: key is %d bytes, want %d", ErrBadSummary, len(s.Key), summaryKeyLen)
	}
	f, err := decodeFilter(s.Filter)
	if err != nil {
		return err
	}
	if err := plausible(f, s.Count); err != nil {
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
	if !p.takeSummary(e.o.Now(), e.o.SummaryGap) {
		return fmt.Errorf("%w: summaries more often than one per %v", ErrRateLimited, e.o.SummaryGap)
	}
	// Raises that were lost or refused since the last round go again;
	// sendLoop sends each only if the neighbour still holds fewer hops.
	for _, id := range p.takeRetries() {
		p.queue.push(id)
	}
	buf := make([]byte, summaryKeyLen+gossip.IDLen)
	copy(buf, s.Key)
	queued := 0
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
		if !p.queue.push(id) {
			return false // queue full: the next round continues
		}
		queued++
		return queued < e.o.MaxSummaryPush // the rest: next round
	})
}
