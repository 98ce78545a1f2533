package find

import (
	"context"
	"time"

	"github.com/quicproquo/qpq/mesh/identity"
)

// Defaults of AutoConfig's zero values.
const (
	DefaultMargin  = 0.2
	DefaultMinGain = 5 * time.Millisecond
	DefaultRounds  = 2
)

// AutoConfig is Auto's hysteresis: another node replaces the current one
// only when its RTT is lower by both Margin (a fraction of the current
// RTT) and MinGain, in Rounds measurement rounds in a row.
type AutoConfig struct {
	Margin  float64
	MinGain time.Duration
	Rounds  int
}

// Auto chooses the node with the lowest RTT among the trusted nodes
// measured (among all of them only when no trusted one answers), and
// keeps its choice until another is clearly and steadily better. It is
// not safe for concurrent use: one loop owns it.
type Auto struct {
	cfg    AutoConfig
	cur    *Node
	next   identity.Fingerprint // the challenger of the last rounds
	streak int                  // rounds in a row next was better
}

// NewAuto returns an Auto with no current choice.
func NewAuto(cfg AutoConfig) *Auto {
	if cfg.Margin <= 0 {
		cfg.Margin = DefaultMargin
	}
	if cfg.MinGain <= 0 {
		cfg.MinGain = DefaultMinGain
	}
	if cfg.Rounds <= 0 {
		cfg.Rounds = DefaultRounds
	}
	return &Auto{cfg: cfg}
}

// Current returns the current choice.
func (a *Auto) Current() (Node, bool) {
	if a.cur == nil {
		return Node{}, false
	}
	return *a.cur, true
}

// Set makes n the current choice (the user picked it with /mesh server,
// or the session is already connected to it).
func (a *Auto) Set(n Node) {
	a.cur, a.next, a.streak = &n, identity.Fingerprint{}, 0
}

// Pick takes one round of measurements (Measure's output) and returns
// the node to use and whether it changed; ok is false when no node in
// the round answered (the current choice is kept).
func (a *Auto) Pick(round []Node) (n Node, changed, ok bool) {
	var best *Node
	var cur *Node
	trusted := false
	for i := range round {
		r := &round[i]
		if r.Err != nil {
			continue
		}
		if a.cur != nil && r.FP == a.cur.FP {
			cur = r
		}
		if r.Trusted && !trusted {
			best, trusted = r, true // trusted beat any untrusted
			continue
		}
		if r.Trusted == trusted && (best == nil || r.RTT < best.RTT) {
			best = r
		}
	}
	if best == nil {
		if a.cur == nil {
			return Node{}, false, false
		}
		return *a.cur, false, false
	}
	switch {
	case a.cur == nil || cur == nil || (trusted && !cur.Trusted):
		// Nothing chosen yet, the current node did not answer, or a
		// trusted node answers where the current one is not trusted.
	case best.FP == cur.FP || !a.better(best.RTT, cur.RTT):
		a.Set(*cur)
		return *cur, false, true
	default:
		if best.FP != a.next {
			a.next, a.streak = best.FP, 0
		}
		a.streak++
		if a.streak < a.cfg.Rounds {
			c := *cur
			a.cur = &c
			return c, false, true
		}
	}
	a.Set(*best)
	return *best, true, true
}

// better reports whether rtt beats cur by the margin and the minimum gain.
func (a *Auto) better(rtt, cur time.Duration) bool {
	gain := cur - rtt
	return gain >= a.cfg.MinGain && float64(gain) >= a.cfg.Margin*float64(cur)
}

// Run measures a round every interval (the first at once) and calls use
// when Pick changes the choice, until ctx ends. round is typically
// func(ctx) { return Peers(ctx, cfg) }; use typically switches a session
// (client.Session.SwitchTo(n.Candidate())). Errors of a round are passed
// to use's sibling onErr (may be nil) and the loop goes on.
func (a *Auto) Run(ctx context.Context, interval time.Duration, round func(context.Context) ([]Node, error), use func(Node), onErr func(error)) {
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		ns, err := round(ctx)
		if err != nil {
			if onErr != nil && ctx.Err() == nil {
				onErr(err)
			}
		} else if n, changed, ok := a.Pick(ns); ok && changed {
			use(n)
		}
		t.Reset(interval)
	}
}
