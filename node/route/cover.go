package route

import (
	"context"
	"crypto/rand"
	"fmt"
	mrand "math/rand/v2"
	"time"

	"github.com/quicproquo/qpq/mesh/identity"
	"github.com/quicproquo/qpq/mesh/onion"
)

// CoverPacket is a cover packet for route: a packet like any other to
// every relay, whose exit finds a payload that says drop and answers on
// a reply block back to entry for id, as for a message it stored.
func CoverPacket(route []Relay, entry Relay, id [onion.ReplyIDSize]byte) ([]byte, error) {
	if len(route) == 0 {
		return nil, fmt.Errorf("%w: cover needs a route", ErrNoRoute)
	}
	reply, err := Reply(route, entry, id)
	if err != nil {
		return nil, fmt.Errorf("cover packet: %w", err)
	}
	pkt, err := onion.Build(hopsOf(route), onion.CoverPayload(reply), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("cover packet: %w", err)
	}
	return pkt, nil
}

// Clock paces a client's onion packets to its node as a Poisson process:
// at each tick it hands the tick to a real packet waiting for one (Wait),
// else it sends cover. The node, and anyone on the local Wi-Fi, then
// sees packets at the same random times whether the person sends or not,
// as long as they send under the rate.
type Clock struct {
	rate  float64
	rnd   *mrand.Rand
	ticks chan struct{}
}

// NewClock makes a clock of rate packets a second (more than 0).
func NewClock(rate float64) *Clock {
	var seed [32]byte
	rand.Read(seed[:])
	return &Clock{rate: rate, rnd: mrand.New(mrand.NewChaCha8(seed)), ticks: make(chan struct{})}
}

// Wait blocks until the clock's next tick is this caller's.
func (c *Clock) Wait(ctx context.Context) error {
	select {
	case <-c.ticks:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Run ticks until ctx ends; cover is called on each tick no real packet
// took (and must not block for long: it sends one packet).
func (c *Clock) Run(ctx context.Context, cover func(ctx context.Context)) {
	for {
		t := time.NewTimer(time.Duration(c.rnd.ExpFloat64() / c.rate * float64(time.Second)))
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return
		}
		select {
		case c.ticks <- struct{}{}:
		default:
			cover(ctx)
		}
	}
}

// CoverRoute picks a route for a cover packet from the cache, as a real
// one would be picked (DefaultHops relays besides the entry), and the
// entry's own descriptor for the reply.
func CoverRoute(c *Cache, entry identity.Fingerprint, rnd *mrand.Rand) (route []Relay, at Relay, err error) {
	relays := c.Usable(time.Now())
	found := false
	for _, r := range relays {
		if r.FP == entry {
			at, found = r, true
		}
	}
	if !found {
		return nil, Relay{}, fmt.Errorf("%w: the entry node is not an onion relay", ErrNoRoute)
	}
	route, err = Pick(relays, DefaultHops, []identity.Fingerprint{entry}, rnd)
	return route, at, err
}
