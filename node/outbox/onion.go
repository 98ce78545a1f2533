package outbox

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/quicproquo/qpq/gossip"
	"github.com/quicproquo/qpq/mesh/identity"
	"github.com/quicproquo/qpq/mesh/onion"
	"github.com/quicproquo/qpq/node/client"
	"github.com/quicproquo/qpq/node/e2e"
	"github.com/quicproquo/qpq/node/route"
	"github.com/quicproquo/qpq/schemas"
)

// Route is how DMs leave the client.
type Route int

// Routes.
const (
	// RouteAuto sends a DM by onion when enough relays are known, else
	// directly, and says which.
	RouteAuto Route = iota
	// RouteOnion sends DMs by onion only; without a route a DM stays
	// queued.
	RouteOnion
	// RouteDirect hands DMs to the node, as channel messages always are.
	RouteDirect
)

func (r Route) String() string {
	switch r {
	case RouteOnion:
		return "onion"
	case RouteDirect:
		return "direct"
	}
	return "auto"
}

// ParseRoute reads "auto", "onion" or "direct".
func ParseRoute(s string) (Route, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "auto", "":
		return RouteAuto, nil
	case "onion":
		return RouteOnion, nil
	case "direct":
		return RouteDirect, nil
	}
	return RouteAuto, fmt.Errorf("route %q: want auto, onion or direct", s)
}

// RouteNote says how one DM left: by onion (through which relays, and
// whether the exit confirmed it stored it) or directly, and why.
type RouteNote struct {
	ID     gossip.ID
	Onion  bool
	Relays []identity.Fingerprint
	Acked  bool
	Reason string // why it went directly (auto)
}

// Text is the note for a person.
func (n RouteNote) Text() string {
	if !n.Onion {
		return "sent directly to the node, not by onion: " + n.Reason
	}
	short := make([]string, len(n.Relays))
	for i, r := range n.Relays {
		short[i] = r.Short()[:9]
	}
	if n.Acked {
		return fmt.Sprintf("sent by onion through %d relays (%s); the exit stored it", len(n.Relays), strings.Join(short, ", "))
	}
	return fmt.Sprintf("sent by onion through %d relays (%s); unconfirmed: the node cannot carry the exit's reply", len(n.Relays), strings.Join(short, ", "))
}

// How often the relays' descriptors are asked for again, and how long an
// onion attempt waits for the exit's reply (two attempts fit a call's
// 15 s).
const (
	relayRefresh = 5 * time.Minute
	onionWait    = 6 * time.Second
	onionTries   = 2
)

// OnionTransport sends over s like SessionTransport, DMs by onion routes
// as mode says; note, if not nil, hears how each DM left.
func OnionTransport(s *client.Session, mode Route, note func(RouteNote)) *RoutedTransport {
	return &RoutedTransport{direct: sessionTransport{s}, s: s, mode: mode, note: note, cache: route.NewCache()}
}

// RoutedTransport is OnionTransport's Transport; its mode may change.
type RoutedTransport struct {
	direct sessionTransport
	s      *client.Session
	note   func(RouteNote)
	cache  *route.Cache

	mu      sync.Mutex
	mode    Route
	fetched time.Time
	from    identity.Fingerprint // the node the cache was last filled from
	path    string               // where the cache is kept; "" not kept
	log     *slog.Logger
	clock   *route.Clock // cover traffic's, while RunCover runs
	covers  int64        // cover packets sent
}

// coverWait bounds one cover packet's send (a client that lost its node
// skips the tick).
const coverWait = 2 * time.Second

// RunCover sends cover onion packets to the node at rate a second
// (Poisson) until ctx ends, and from then on DMs by onion take the
// clock's ticks instead of going at once: the node sees packets at the
// same random times whether the person sends or not. A tick with fewer
// than 3 known relays sends nothing (DMs then go directly anyway).
func (t *RoutedTransport) RunCover(ctx context.Context, rate float64) {
	clock := route.NewClock(rate)
	t.mu.Lock()
	t.clock = clock
	t.mu.Unlock()
	defer func() {
		t.mu.Lock()
		t.clock = nil
		t.mu.Unlock()
	}()
	// Each cover packet waits for its reply as a real one does, so the
	// sends overlap; at most coverInFlight at once, the rest skipped.
	var wg sync.WaitGroup
	defer wg.Wait()
	sem := make(chan struct{}, coverInFlight)
	clock.Run(ctx, func(ctx context.Context) {
		select {
		case sem <- struct{}{}:
		default:
			return
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			t.sendCover(ctx)
		}()
	})
}

// coverInFlight bounds the cover packets waiting for their replies.
const coverInFlight = 8

func (t *RoutedTransport) sendCover(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, coverWait+onionWait)
	defer cancel()
	c, err := t.s.Get(ctx)
	if err != nil {
		return
	}
	entry := c.Client.NodeFingerprint()
	t.refresh(ctx, c.Client, entry)
	rt, at, err := route.CoverRoute(t.relays(), entry, nil)
	if err != nil {
		return
	}
	var id [onion.ReplyIDSize]byte
	rand.Read(id[:])
	pkt, err := route.CoverPacket(rt, at, id)
	if err != nil {
		return
	}
	if _, err := c.Client.SendOnion(ctx, rt[0].FP, pkt, id[:], onionWait); err == nil {
		t.mu.Lock()
		t.covers++
		t.mu.Unlock()
	}
}

// CoverSent is how many cover packets RunCover sent.
func (t *RoutedTransport) CoverSent() int64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.covers
}

// KeepRelays loads the relays learnt in earlier runs from path and keeps
// them there from now on, so that first-seen times add up and routes draw
// on every node the client asked. Damaged lines are skipped; a file that
// cannot be read is an error. log (nil: discard) hears failed saves.
func (t *RoutedTransport) KeepRelays(path string, log *slog.Logger) error {
	c, bad, err := route.Load(path)
	if err != nil {
		return err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if bad > 0 {
		log.Warn("onion relay cache: damaged lines skipped", "path", path, "lines", bad)
	}
	t.mu.Lock()
	t.cache, t.path, t.log = c, path, log
	t.mu.Unlock()
	return nil
}

// SetMode changes how the next DMs leave.
func (t *RoutedTransport) SetMode(m Route) {
	t.mu.Lock()
	t.mode = m
	t.mu.Unlock()
}

// Mode is how DMs leave now.
func (t *RoutedTransport) Mode() Route {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.mode
}

// Relays is how many onion relays the client may use now.
func (t *RoutedTransport) Relays() int { return len(t.relays().Usable(time.Now())) }

func (t *RoutedTransport) relays() *route.Cache {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.cache
}

// LookupBundle implements Transport.
func (t *RoutedTransport) LookupBundle(ctx context.Context, fp identity.Fingerprint) (e2e.Bundle, error) {
	return t.direct.LookupBundle(ctx, fp)
}

// Enqueue implements Transport.
func (t *RoutedTransport) Enqueue(ctx context.Context, env gossip.Envelope) error {
	mode := t.Mode()
	if mode == RouteDirect || env.Kind != schemas.Envelope_Kind_dm {
		return t.direct.Enqueue(ctx, env)
	}
	c, err := t.s.Get(ctx)
	if err != nil {
		return err
	}
	entry := c.Client.NodeFingerprint()
	t.refresh(ctx, c.Client, entry)
	cache := t.relays()
	usable := 0
	for _, r := range cache.Usable(time.Now()) {
		if r.FP != entry {
			usable++
		}
	}
	if usable < route.DefaultHops {
		reason := fmt.Sprintf("%d onion relays known besides the node, %d needed", usable, route.DefaultHops)
		if mode == RouteOnion {
			return fmt.Errorf("%w: %s", route.ErrNoRoute, reason)
		}
		return t.directly(ctx, env, reason)
	}
	t.mu.Lock()
	clock := t.clock
	t.mu.Unlock()
	sender := &route.Sender{Cache: cache, Entry: entry, Wait: onionWait, Attempts: onionTries, Clock: clock}
	res, err := sender.Send(ctx, c.Client, env)
	if err != nil {
		if ctx.Err() != nil || !errors.Is(err, route.ErrNotAcked) && !errors.Is(err, route.ErrNoRoute) {
			if ctx.Err() == nil {
				t.s.Fail(c, err)
			}
			return err
		}
		if mode == RouteOnion {
			return err
		}
		return t.directly(ctx, env, fmt.Sprintf("no reply from the exits of %d onion routes", res.Attempts))
	}
	if t.note != nil {
		t.note(RouteNote{ID: env.ID, Onion: true, Relays: res.Route, Acked: res.Acked})
	}
	return nil
}

func (t *RoutedTransport) directly(ctx context.Context, env gossip.Envelope, reason string) error {
	if err := t.direct.Enqueue(ctx, env); err != nil {
		return err
	}
	if t.note != nil {
		t.note(RouteNote{ID: env.ID, Reason: reason})
	}
	return nil
}

// refresh asks the node for relays' descriptors now and then, and at once
// from a node not asked before (the cache gathers several nodes' views).
func (t *RoutedTransport) refresh(ctx context.Context, c *client.Client, node identity.Fingerprint) {
	t.mu.Lock()
	due := time.Since(t.fetched) > relayRefresh || t.from != node
	t.mu.Unlock()
	if !due {
		return
	}
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	descs, err := c.Descriptors(cctx, 64)
	if err != nil {
		return // an older node: no onion relays from it
	}
	cache := t.relays()
	cache.Add(descs, time.Now())
	t.mu.Lock()
	t.fetched, t.from = time.Now(), node
	path, log := t.path, t.log
	t.mu.Unlock()
	if path != "" {
		if err := cache.Save(path, time.Now()); err != nil {
			log.Warn("onion relay cache not saved (routes then lean on this node's view)", "err", err)
		}
	}
}
