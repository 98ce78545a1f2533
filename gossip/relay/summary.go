package relay

import (
	"context"
	"crypto/rand"
	"fmt"

	"github.com/bits-and-blooms/bloom/v3"

	"github.com/quicproquo/qpq/gossip"
	"github.com/quicproquo/qpq/mesh/identity"
	"github.com/quicproquo/qpq/schemas"
)

const (
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

// SendSummary offers our digest to a neighbour, which pushes back what we
// lack.
func (e *Engine) SendSummary(ctx context.Context, fp identity.Fingerprint) error {
	p := e.peer(fp)
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
	p := e.peer(fp)
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
