package daemon

import (
	"time"

	"github.com/quicproquo/qpq/mesh/identity"
	"github.com/quicproquo/qpq/mesh/link"
	"github.com/quicproquo/qpq/mesh/neighbours"
)

// Neighbour selection: nodes learnt by mDNS and peer exchange go into one
// table; a single loop asks it for a plan on every new node and every
// selectInterval, and runs the dials and closes it returns.
const (
	selectInterval = 15 * time.Second
	maxCandidates  = 256
	// stableLink is how long a link must last to count as a success: one
	// that ends sooner (refused, replaced, flapping) backs its redial off.
	stableLink = 30 * time.Second
)

// inboundCap is how many inbound node links the node holds: its own
// --max-links, but never fewer than 8, so a newcomer to a segment where
// every node is full still finds one that accepts it.
func (d *Daemon) inboundCap() int { return max(d.cfg.MaxLinks, 8) }

// learn records a node found by mDNS or peer exchange and wakes the
// selection loop. It never blocks.
func (d *Daemon) learn(fp identity.Fingerprint, addrs []string, via string) {
	d.learnFrom(fp, addrs, via, "")
}

// learnFrom is learn for a node src told us of: dials to its addresses
// never reached spend src's budget (neighbours.Candidate.Src).
func (d *Daemon) learnFrom(fp identity.Fingerprint, addrs []string, via, src string) {
	if fp.Equal(d.id.Fingerprint()) {
		return
	}
	d.table.LearnFrom(fp, addrs, via, src, time.Now())
	d.kickSelect()
}

// kickSelect asks for a plan soon: a node was learnt, a dial ended or a
// link went down. It never blocks.
func (d *Daemon) kickSelect() {
	select {
	case d.kick <- struct{}{}:
	default:
	}
}

// selectLoop owns the plan: it is the only goroutine that dials learnt
// nodes or drops links for neighbour selection.
func (d *Daemon) selectLoop() {
	t := time.NewTicker(selectInterval)
	defer t.Stop()
	for {
		select {
		case <-d.ctx.Done():
			return
		case <-t.C:
		case <-d.kick:
		}
		d.selectOnce()
	}
}

func (d *Daemon) selectOnce() {
	now := time.Now()
	s := neighbours.State{MaxLinks: d.cfg.MaxLinks, Now: now}
	static := map[identity.Fingerprint]bool{}
	for _, p := range d.cfg.Peers {
		s.Static = append(s.Static, p.FP)
		static[p.FP] = true
	}
	d.mu.Lock()
	trialUp := false
	for fp, l := range d.links {
		rtt := l.RTT()
		if l.Outbound() {
			// Only links we dialled rank a node as measured: inbound ones
			// are the other side's choice (and cheap for it to make).
			d.table.Measured(fp, rtt, now.Sub(l.Since()) >= stableLink)
		}
		// A trial dial that lost to the peer's own connection leaves an
		// inbound link: not a trial, so never dropped as one.
		trial := fp == d.trial && l.Outbound()
		trialUp = trialUp || trial
		s.Links = append(s.Links, neighbours.Link{
			FP: fp, Outbound: l.Outbound(), Static: static[fp],
			Anchor: d.anchor[fp], Trial: trial, RTT: rtt, Age: now.Sub(l.Since()),
		})
	}
	for fp, anchor := range d.dialing {
		s.Busy = append(s.Busy, fp)
		if anchor {
			s.BusyAnchors++
		}
	}
	if _, busy := d.dialing[d.trial]; !trialUp && !busy {
		d.trial = identity.Fingerprint{} // the trial failed or its link ended
	}
	s.LastTrial = d.lastTrial
	plan := d.table.Plan(s)
	trial := d.trial
	if plan.EndTrial {
		d.trial = identity.Fingerprint{}
	}
	var closing []*link.Link
	for _, fp := range plan.Close {
		if l := d.links[fp]; l != nil {
			closing = append(closing, l)
		}
	}
	d.mu.Unlock()
	for _, l := range closing {
		if l.Peer() == trial {
			d.log.Info("trial link no faster than the links held; dropping it", "peer", l.Peer(), "rtt", l.RTT())
			l.Close(link.CodeReplaced, "trial link not kept")
			continue
		}
		d.log.Info("dropping the slowest link for a faster one", "peer", l.Peer(), "rtt", l.RTT(), "faster", trial)
		l.Close(link.CodeReplaced, "replaced by a faster link")
	}
	for _, dl := range plan.Dial {
		d.dialPlanned(dl)
	}
}

// dialPlanned dials one planned candidate in its own goroutine. A dial
// that fails, or a link that ends before stableLink, backs the candidate
// off; the plan is asked again once the dial ends.
func (d *Daemon) dialPlanned(dl neighbours.Dial) {
	d.mu.Lock()
	_, linked := d.links[dl.FP]
	_, busy := d.dialing[dl.FP]
	// ctx is checked under mu: Close cancels under mu, so a goroutine
	// counted here is counted before Close waits.
	if linked || busy || d.ctx.Err() != nil {
		d.mu.Unlock()
		return
	}
	d.dialing[dl.FP] = dl.Anchor
	if dl.Trial {
		d.trial, d.lastTrial = dl.FP, time.Now()
	}
	d.wg.Add(1)
	d.mu.Unlock()
	go func() {
		defer d.wg.Done()
		l := d.dialAny(dl)
		if l == nil {
			d.mu.Lock()
			delete(d.dialing, dl.FP)
			d.mu.Unlock()
			d.table.Failed(dl.FP, time.Now())
			d.kickSelect()
			return
		}
		up := time.Now()
		// runLink clears the dialling mark as it registers the link.
		if d.runLink(l, linkInfo{via: dl.Via, anchor: dl.Anchor, planned: true}) &&
			time.Since(up) < stableLink && d.ctx.Err() == nil {
			d.table.Failed(dl.FP, time.Now())
		}
	}()
}

// dialAny tries a candidate's addresses in turn.
func (d *Daemon) dialAny(dl neighbours.Dial) *link.Link {
	for _, a := range dl.Addrs {
		l, err := d.dial(link.PeerAddr{Addr: a, FP: dl.FP})
		if err == nil {
			d.table.Reached(a, time.Now()) // later dials to it cost no budget
			return l
		}
		if d.ctx.Err() != nil {
			return nil
		}
		d.log.Debug("learnt node not reachable", "peer", dl.FP, "addr", a, "via", dl.Via, "err", err)
	}
	return nil
}
