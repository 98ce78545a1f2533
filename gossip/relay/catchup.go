package relay

import (
	"bytes"
	"math"

	"github.com/bits-and-blooms/bloom/v3"

	"github.com/quicproquo/qpq/gossip"
	"github.com/quicproquo/qpq/schemas"
)

// maxRests bounds the summaries whose scan a neighbour's sender still
// has to finish (one per id range of a round; a round of a 300k-id store
// has about ten).
const maxRests = 64

// scanRest is the unfinished part of a received summary: what the
// neighbour lacks beyond what one pass could queue. The sender finishes
// it once its queue has drained, so a new neighbour is brought up to
// date at the link's pace in one round instead of MaxSummaryPush a
// minute. It holds the summary's filter (bounded by MaxFilterBytes) and
// nothing per id.
type scanRest struct {
	f   *bloom.BloomFilter
	key []byte
	r   idRange
}

// keepRest remembers rest for p, replacing one for the same range.
func (p *peer) keepRest(rest *scanRest) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for i, o := range p.rests {
		if bytes.Equal(o.r.start, rest.r.start) {
			p.rests[i] = rest
			return
		}
	}
	if len(p.rests) < maxRests {
		p.rests = append(p.rests, rest)
	}
}

// takeRest takes the oldest unfinished scan, if any.
func (p *peer) takeRest() *scanRest {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.rests) == 0 {
		return nil
	}
	r := p.rests[0]
	p.rests = p.rests[1:]
	return r
}

// knows reports whether the neighbour is known to hold id.
func (p *peer) knows(id gossip.ID) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	_, ok := p.known[id]
	return ok
}

// scanSummary queues for p, up to most, the ids in rest's range that its
// filter shows p lacks; with fresh set (the summary just arrived) an id
// we believed delivered is forgotten and sent again, otherwise (finishing
// a scan) ids p is known to hold are skipped. When it stops for lack of
// room, the rest is kept for the sender to finish.
func (e *Engine) scanSummary(p *peer, rest *scanRest, most int, fresh bool) error {
	buf := make([]byte, summaryKeyLen+gossip.IDLen)
	copy(buf, rest.key)
	queued, full := 0, false
	test := func(id gossip.ID) bool {
		copy(buf[summaryKeyLen:], id[:])
		if rest.f.Test(buf) {
			// It has it, or this is a false positive: not remembered, so
			// the next round, under a fresh key, catches it.
			return true
		}
		if fresh {
			// The digest is fresher than our record of what we sent: a
			// push that was lost after it looked delivered goes again.
			p.forget(id)
		} else if p.knows(id) {
			return true
		}
		if queued >= most || !p.queue.push(id) {
			full = true
			return false
		}
		queued++
		return true
	}
	var err error
	if rest.r.whole() {
		// The version-1 form, as before: every id, by the expiry index.
		err = e.o.Store.IDs(func(id gossip.ID, _ schemas.Envelope_Kind) bool { return test(id) })
	} else {
		err = e.rangeIDs(rest.r, test)
	}
	if err == nil && full {
		p.keepRest(rest)
	}
	return err
}

// finishScans runs p's oldest unfinished summary scan, if there is one,
// and reports whether it queued anything.
func (e *Engine) finishScans(p *peer) bool {
	for {
		rest := p.takeRest()
		if rest == nil {
			return false
		}
		before := p.queue.len()
		most := max(1, int(math.Ceil(rest.r.share()*float64(e.o.MaxSummaryPush))))
		if err := e.scanSummary(p, rest, most, false); err != nil {
			e.log.Debug("finishing a summary's scan failed", "peer", p.fp, "err", err)
			continue
		}
		if p.queue.len() > before {
			return true
		}
	}
}
