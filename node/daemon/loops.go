package daemon

import (
	"context"
	crand "crypto/rand"
	"sync"
	"sync/atomic"
	"time"

	"github.com/quicproquo/qpq/mesh/descriptor"
	"github.com/quicproquo/qpq/mesh/identity"
	"github.com/quicproquo/qpq/mesh/onion"
	"github.com/quicproquo/qpq/node/control"
	"github.com/quicproquo/qpq/node/route"
)

// Loop cover traffic: with loop-rate set, the node sends cover packets
// through 3 relays whose reply comes back to itself, on a Poisson clock,
// and counts how many return. A relay that drops packets on purpose (or
// a link that loses them) shows as loops lost in qpq status; to the
// relays a loop is a packet and a reply like any other.

const (
	// loopWait is how long a loop may take to come back.
	loopWait = 30 * time.Second
	// maxLoopsOut bounds the loops waiting to return; a tick beyond it
	// sends nothing.
	maxLoopsOut = 64
	// loopRelaysAge is how long the relays parsed from descriptors are
	// used before they are read again.
	loopRelaysAge = 10 * time.Second
)

// loops is the node's loop cover state.
type loops struct {
	sent, returned, lost, skipped atomic.Int64

	mu     sync.Mutex
	relays []route.Relay
	at     time.Time
}

// runLoops sends loops at rate a second until ctx ends, on the same
// Poisson clock a client's cover uses (nothing waits on its ticks, so
// every tick is a loop).
func (r *onionRelay) runLoops(ctx context.Context, rate float64) {
	var wg sync.WaitGroup
	defer wg.Wait()
	out := make(chan struct{}, maxLoopsOut)
	route.NewClock(rate).Run(ctx, func(ctx context.Context) {
		select {
		case out <- struct{}{}:
		default:
			r.loops.skipped.Add(1)
			return
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-out }()
			r.loop(ctx)
		}()
	})
}

// loop sends one loop and waits for it.
func (r *onionRelay) loop(ctx context.Context) {
	self := r.d.id.Fingerprint()
	relays := r.loopRelays()
	var me *route.Relay
	for i := range relays {
		if relays[i].FP == self {
			me = &relays[i]
		}
	}
	rt, err := route.Pick(relays, route.DefaultHops, []identity.Fingerprint{self}, nil)
	if err != nil || me == nil {
		r.loops.skipped.Add(1)
		return
	}
	var id [onion.ReplyIDSize]byte
	crand.Read(id[:])
	pkt, err := route.CoverPacket(rt, *me, id)
	if err != nil {
		r.loops.skipped.Add(1)
		return
	}
	ch, done, err := r.await(id)
	if err != nil {
		r.loops.skipped.Add(1)
		return
	}
	defer done()
	r.loops.sent.Add(1)
	// Timed from now: handing it on may itself wait (a dial to a relay
	// that is down).
	t := time.NewTimer(loopWait)
	defer t.Stop()
	r.forward(rt[0].FP, pkt)
	select {
	case <-ch:
		r.loops.returned.Add(1)
	case <-t.C:
		r.loops.lost.Add(1)
	case <-ctx.Done():
	}
}

// loopRelays is the relays known by descriptor, parsed at most every
// loopRelaysAge.
func (r *onionRelay) loopRelays() []route.Relay {
	r.loops.mu.Lock()
	defer r.loops.mu.Unlock()
	if r.loops.relays != nil && time.Since(r.loops.at) < loopRelaysAge {
		return r.loops.relays
	}
	var descs []descriptor.Descriptor
	for _, b := range r.sample(maxOnionDescs) {
		if d, err := descriptor.Verify(b); err == nil {
			descs = append(descs, d)
		}
	}
	c := route.NewCache()
	// Known from now: a node's own loops have no client to steer them,
	// so every relay it knows is as good as another.
	c.Add(descs, time.Now().Add(-time.Hour))
	relays := c.Usable(time.Now())
	if len(relays) > route.DefaultHops {
		// Kept only when a loop can be made of them: a node that starts
		// knowing few relays reads them again at the next tick.
		r.loops.relays, r.loops.at = relays, time.Now()
	}
	return relays
}

func (r *onionRelay) loopStats() control.Loops {
	return control.Loops{Rate: r.d.cfg.LoopRate, Sent: r.loops.sent.Load(), Returned: r.loops.returned.Load(),
		Lost: r.loops.lost.Load(), Skipped: r.loops.skipped.Load()}
}
