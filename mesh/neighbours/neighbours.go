// Package neighbours chooses which learnt nodes a node links to (DESIGN,
// "Finding each other"): it keeps a bounded table of the nodes mDNS and
// peer exchange reported, and plans dials and closes so that a node holds
// about --max-links links, most of its own picks the lowest-RTT ones it
// knows, a few picked at random so that a nearby attacker cannot take
// every slot. It holds no links itself: the daemon runs the plan.
package neighbours

import (
	"bytes"
	"cmp"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	"github.com/quicproquo/qpq/mesh/identity"
)

// Ways a candidate was learnt (the daemon's `via` names).
const (
	ViaMDNS     = "mdns"
	ViaExchange = "exchange"
)

// Tunables of the plan.
const (
	// MaxAnchors is how many of its own picks a node makes at random and
	// never drops for a faster one (fewer when --max-links is tiny).
	MaxAnchors = 2
	// JudgeAfter is how long a trial link runs before its RTT is compared.
	JudgeAfter = 10 * time.Second
	// Explore is how often a full node tries one more candidate, hoping
	// for a faster link than its slowest.
	Explore = 5 * time.Minute
	// MaxDialling bounds dials under way at once.
	MaxDialling = 4
	// forget drops candidates not heard of for this long (descriptors
	// are refreshed every 30 minutes, mDNS every minute or so).
	forget = 3 * time.Hour
	// retryMin and retryMax bound the backoff after failed dials.
	retryMin = 30 * time.Second
	retryMax = 30 * time.Minute
)

// Dials to addresses never reached before are budgeted (issue 9, defect
// 19): anyone linked to us can relay signed descriptors of identities it
// made up, naming any address, and each would become a dial, so the node
// could be used to knock on addresses an attacker chose. An address
// costs nothing once a link to it came up, or when mDNS reported it on a
// shared link; a new one costs a token from the bucket of the source the
// descriptor came through, and one from a node-wide bucket.
const (
	// NewAddrBurst and NewAddrEvery: never-reached addresses one source
	// may have dialled at once, and how often it earns another.
	NewAddrBurst = 4
	NewAddrEvery = time.Minute
	// NewAddrBurstAll and NewAddrEveryAll: the same for the whole node,
	// whatever the sources; this bounds made-up sources too.
	NewAddrBurstAll = 8
	NewAddrEveryAll = 30 * time.Second
	// maxKnownAddrs bounds the addresses remembered as reached.
	maxKnownAddrs = 1024
	// maxSources bounds the per-source buckets; past it sources share
	// the unnamed one.
	maxSources = 256
)

// better is how much faster a trial must be than the slowest replaceable
// link to take its place (4/5 of its RTT), so links do not flap between
// nodes of about equal RTT.
const betterNum, betterDen = 4, 5

// Candidate is a node the table may dial.
type Candidate struct {
	FP    identity.Fingerprint
	Addrs []string
	Via   string
	// Src is who told us of it (the neighbour that relayed its
	// descriptor, or its signer when that is unknown); "" for mDNS.
	// Dials to its never-reached addresses spend Src's budget.
	Src string

	seen      time.Time     // last learnt
	rtt       time.Duration // last measured on a link we dialled; 0 unknown
	fails     int           // dials failed in a row
	nextTry   time.Time     // no dial before this (backoff after failures)
	coolUntil time.Time     // no dial before this (it dropped us for a faster link)
}

// Table is the neighbour table: bounded, safe for concurrent use.
type Table struct {
	max int
	rng *rand.Rand

	mu      sync.Mutex // guards the fields below
	c       map[identity.Fingerprint]*Candidate
	known   map[string]time.Time // addresses reached (or on a shared link), when last
	budgets map[string]*budget   // per source, for never-reached addresses
	all     budget               // node-wide, for never-reached addresses
}

// budget is a token bucket; a zero budget is full.
type budget struct {
	spent float64 // tokens below full
	at    time.Time
}

// level is how many tokens b holds at now, of burst, earning one every.
func (b *budget) level(now time.Time, burst int, every time.Duration) float64 {
	spent := b.spent
	if !b.at.IsZero() {
		spent -= float64(now.Sub(b.at)) / float64(every)
	}
	return float64(burst) - max(spent, 0)
}

func (b *budget) spend(now time.Time, burst int, every time.Duration) {
	b.spent = float64(burst) - b.level(now, burst, every) + 1
	b.at = now
}

// NewTable returns a table of at most max candidates; rng orders random
// picks (tests pass a seeded one).
func NewTable(max int, rng *rand.Rand) *Table {
	return &Table{max: max, rng: rng, c: map[identity.Fingerprint]*Candidate{},
		known: map[string]time.Time{}, budgets: map[string]*budget{}}
}

// Learn records (or refreshes) a node heard of by via. A node reported by
// mDNS stays marked so for as long as mDNS keeps reporting it: it is on a
// shared link, so likely near. When the table is full the candidate heard
// of least recently makes room.
func (t *Table) Learn(fp identity.Fingerprint, addrs []string, via string, now time.Time) {
	t.LearnFrom(fp, addrs, via, "", now)
}

// LearnFrom is Learn for a node that src told us of (see Candidate.Src).
// Addresses mDNS reports count as reached: they are on a shared link.
func (t *Table) LearnFrom(fp identity.Fingerprint, addrs []string, via, src string, now time.Time) {
	if fp.IsZero() || len(addrs) == 0 {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if via == ViaMDNS {
		for _, a := range addrs {
			t.reachedLocked(a, now)
		}
	}
	c := t.c[fp]
	if c == nil {
		if len(t.c) >= t.max {
			t.evictOldest()
		}
		c = &Candidate{FP: fp}
		t.c[fp] = c
	}
	if via == ViaMDNS || c.Via != ViaMDNS || now.Sub(c.seen) > forget/2 {
		c.Via = via
	}
	c.Addrs = slices.Clone(addrs)
	c.Src = src
	c.seen = now
}

// Reached records that a link to addr came up: dialling it again costs
// no budget.
func (t *Table) Reached(addr string, now time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.reachedLocked(addr, now)
}

func (t *Table) reachedLocked(addr string, now time.Time) {
	if _, ok := t.known[addr]; !ok && len(t.known) >= maxKnownAddrs {
		var oldest string
		var at time.Time
		for a, when := range t.known {
			if oldest == "" || when.Before(at) {
				oldest, at = a, when
			}
		}
		delete(t.known, oldest)
	}
	t.known[addr] = now
}

// admitLocked returns the addresses of c the plan may dial now: those
// reached before, then never-reached ones while c's source and the node
// have budget, each spending one token of both. None means wait.
func (t *Table) admitLocked(c *Candidate, now time.Time) []string {
	var out, fresh []string
	for _, a := range c.Addrs {
		if _, ok := t.known[a]; ok {
			out = append(out, a)
		} else {
			fresh = append(fresh, a)
		}
	}
	if len(fresh) == 0 {
		return out
	}
	src := t.budgets[c.Src]
	if src == nil {
		if len(t.budgets) >= maxSources {
			t.pruneBudgetsLocked(now)
		}
		name := c.Src
		if len(t.budgets) >= maxSources {
			name = "" // shared by the sources that do not fit
		}
		if src = t.budgets[name]; src == nil {
			src = &budget{}
			t.budgets[name] = src
		}
	}
	for _, a := range fresh {
		if src.level(now, NewAddrBurst, NewAddrEvery) < 1 || t.all.level(now, NewAddrBurstAll, NewAddrEveryAll) < 1 {
			break
		}
		src.spend(now, NewAddrBurst, NewAddrEvery)
		t.all.spend(now, NewAddrBurstAll, NewAddrEveryAll)
		out = append(out, a)
	}
	return out
}

// pruneBudgetsLocked forgets budgets that have refilled: a full one means
// the same as none.
func (t *Table) pruneBudgetsLocked(now time.Time) {
	for name, b := range t.budgets {
		if b.level(now, NewAddrBurst, NewAddrEvery) >= NewAddrBurst {
			delete(t.budgets, name)
		}
	}
}

// evictOldest makes room. Nodes only heard of by peer exchange and never
// linked go first (oldest first), so a flood of made-up descriptors
// cannot push out the nodes mDNS found or the node has linked to.
func (t *Table) evictOldest() {
	var oldest *Candidate
	for _, c := range t.c {
		if oldest == nil || evictRank(c) < evictRank(oldest) ||
			(evictRank(c) == evictRank(oldest) && c.seen.Before(oldest.seen)) {
			oldest = c
		}
	}
	if oldest != nil {
		delete(t.c, oldest.FP)
	}
}

func evictRank(c *Candidate) int {
	switch {
	case c.rtt > 0:
		return 2
	case c.Via == ViaMDNS:
		return 1
	default:
		return 0
	}
}

// Measured records the RTT seen on a link to fp; stable says the link has
// lasted long enough to clear fp's record of failures.
func (t *Table) Measured(fp identity.Fingerprint, rtt time.Duration, stable bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	c := t.c[fp]
	if c == nil {
		return
	}
	if rtt > 0 {
		c.rtt = rtt
	}
	if stable {
		c.fails = 0
		c.nextTry = time.Time{}
	}
}

// Cooldown keeps fp from being dialled for d (a node that dropped our
// link for a faster one). A stable link does not clear it.
func (t *Table) Cooldown(fp identity.Fingerprint, d time.Duration, now time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if c := t.c[fp]; c != nil && c.coolUntil.Before(now.Add(d)) {
		c.coolUntil = now.Add(d)
	}
}

// Failed records a failed dial: fp is not tried again for a while,
// doubling up to half an hour.
func (t *Table) Failed(fp identity.Fingerprint, now time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	c := t.c[fp]
	if c == nil {
		return
	}
	wait := retryMin << min(c.fails, 10)
	c.fails++
	c.nextTry = now.Add(min(wait, retryMax))
}

// Len is the number of candidates held.
func (t *Table) Len() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.c)
}

// Link is one current link as the plan sees it.
type Link struct {
	FP       identity.Fingerprint
	Outbound bool          // we dialled it
	Static   bool          // a configured peer: always kept, never planned
	Anchor   bool          // one of our random picks
	Trial    bool          // dialled to compare its RTT
	RTT      time.Duration // smoothed RTT
	Age      time.Duration // how long it has been up
}

// replaceable reports whether we picked this link by RTT and may drop it
// for a faster one.
func (l Link) replaceable() bool { return l.Outbound && !l.Static && !l.Anchor && !l.Trial }

// State is what the daemon holds when it asks for a plan.
type State struct {
	MaxLinks int
	Links    []Link
	Static   []identity.Fingerprint // configured peers, linked or not
	Busy     []identity.Fingerprint // dials under way
	// BusyAnchors is how many dials under way are random picks.
	BusyAnchors int
	LastTrial   time.Time // when the last trial was dialled
	Now         time.Time
}

// Dial is a planned dial.
type Dial struct {
	FP     identity.Fingerprint
	Addrs  []string
	Via    string
	Anchor bool // a random pick, kept however slow
	Trial  bool // a trial: judged after JudgeAfter
}

// Plan is what the daemon should do now.
type Plan struct {
	Dial  []Dial
	Close []identity.Fingerprint
	// EndTrial: the trial link was judged; it is now an ordinary link
	// (unless it is in Close).
	EndTrial bool
}

// Anchors is how many random picks a node with maxLinks links keeps:
// two by default, fewer when maxLinks is small (one link in four), so a
// node told to keep one link keeps exactly the link it is given.
func Anchors(maxLinks int) int { return min(MaxAnchors, maxLinks/4) }

// Plan decides which candidates to dial and which links to drop:
//   - while a node has fewer than MaxLinks links (dials under way count),
//     it dials candidates: first random ones until it holds Anchors
//     random picks, then the lowest known RTT, then nodes mDNS found (on
//     a shared link), then the rest in random order;
//   - the random picks are made even when inbound links fill every slot,
//     so neighbours that dial in cannot leave the node only them;
//   - a full node dials one trial every Explore; after JudgeAfter the
//     trial replaces the slowest link the node picked by RTT if it is
//     clearly faster (4/5), and is closed otherwise;
//   - addresses never reached are dialled only within their source's
//     and the node's budget (NewAddrBurst...); a candidate left with no
//     address to dial waits for a later plan.
func (t *Table) Plan(s State) Plan {
	t.mu.Lock()
	defer t.mu.Unlock()
	var p Plan
	taken := map[identity.Fingerprint]bool{}
	for _, fp := range s.Static {
		taken[fp] = true
	}
	for _, fp := range s.Busy {
		taken[fp] = true
	}
	anchors, inbound, hasTrial := s.BusyAnchors, 0, false
	var trial Link
	for _, l := range s.Links {
		taken[l.FP] = true
		if l.Anchor {
			anchors++
		}
		if !l.Outbound {
			inbound++
		}
		if l.Trial {
			trial, hasTrial = l, true
		}
	}
	var eligible []*Candidate
	for fp, c := range t.c {
		if s.Now.Sub(c.seen) > forget {
			delete(t.c, fp)
			continue
		}
		if !taken[fp] && !s.Now.Before(c.nextTry) && !s.Now.Before(c.coolUntil) {
			eligible = append(eligible, c)
		}
	}
	// Map order is random but not seeded: sort, then shuffle with rng.
	slices.SortFunc(eligible, func(a, b *Candidate) int { return bytes.Compare(a.FP[:], b.FP[:]) })
	t.rng.Shuffle(len(eligible), func(i, j int) { eligible[i], eligible[j] = eligible[j], eligible[i] })

	room := MaxDialling - len(s.Busy)
	free := s.MaxLinks - len(s.Links) - len(s.Busy)
	// take plans a dial of c if its addresses' budget allows; either way
	// c is not considered again in this plan.
	take := func(c *Candidate, anchor, trial bool) {
		eligible = slices.DeleteFunc(eligible, func(x *Candidate) bool { return x == c })
		addrs := t.admitLocked(c, s.Now)
		if len(addrs) == 0 {
			return
		}
		p.Dial = append(p.Dial, Dial{FP: c.FP, Addrs: addrs, Via: c.Via, Anchor: anchor, Trial: trial})
		room--
		free--
	}
	// Random picks beyond MaxLinks only to stop inbound links from
	// filling every slot; configured peers alone never cause them.
	for anchors+len(p.Dial) < Anchors(s.MaxLinks) && (free > 0 || inbound > 0) && room > 0 && len(eligible) > 0 {
		take(eligible[0], true, false)
	}
	slices.SortStableFunc(eligible, rank)
	for free > 0 && room > 0 && len(eligible) > 0 {
		take(eligible[0], false, false)
	}

	// The slowest link we picked by RTT: what a trial would replace, and
	// what goes first when we are over MaxLinks.
	var worst *Link
	for i := range s.Links {
		l := &s.Links[i]
		if l.replaceable() && (worst == nil || l.RTT > worst.RTT) {
			worst = l
		}
	}
	over := len(s.Links) > s.MaxLinks
	switch {
	case hasTrial && trial.Age >= JudgeAfter:
		p.EndTrial = true
		if !over {
			break // room for both
		}
		if worst != nil && trial.RTT*betterDen < worst.RTT*betterNum {
			p.Close = append(p.Close, worst.FP)
		} else {
			p.Close = append(p.Close, trial.FP)
		}
	case !hasTrial && free <= 0 && len(p.Dial) == 0 && len(s.Busy) == 0 && worst != nil && len(eligible) > 0 &&
		s.Now.Sub(s.LastTrial) >= Explore:
		// Try a node never measured first; else the fastest measured.
		i := slices.IndexFunc(eligible, func(c *Candidate) bool { return c.rtt == 0 })
		c := eligible[max(i, 0)]
		if c.rtt == 0 || c.rtt*betterDen < worst.RTT*betterNum {
			take(c, false, true)
		}
	}
	return p
}

// rank orders candidates for RTT picks: measured ones by RTT, then those
// mDNS found, then the rest (stable: random order within each group).
func rank(a, b *Candidate) int {
	ga, gb := group(a), group(b)
	if ga != gb {
		return ga - gb
	}
	if ga == 0 {
		return cmp.Compare(a.rtt, b.rtt)
	}
	return 0
}

func group(c *Candidate) int {
	switch {
	case c.rtt > 0:
		return 0
	case c.Via == ViaMDNS:
		return 1
	default:
		return 2
	}
}
