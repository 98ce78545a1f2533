package neighbours

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/quicproquo/qpq/mesh/identity"
)

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func fp(i int) identity.Fingerprint {
	var f identity.Fingerprint
	f[0], f[1] = byte(i>>8), byte(i)
	f[31] = 1 // never zero
	return f
}

func addr(i int) []string { return []string{fmt.Sprintf("10.0.%d.%d:7443", i/250, i%250+1)} }

// table returns a table holding candidates 1..n, learnt by via, at
// addresses reached before (so the budget for new addresses, tested in
// budget_test.go, leaves these plans alone).
func table(n int, via string) *Table {
	t := NewTable(256, rand.New(rand.NewPCG(1, 2)))
	for i := 1; i <= n; i++ {
		t.Learn(fp(i), addr(i), via, t0)
		t.Reached(addr(i)[0], t0)
	}
	return t
}

func dialled(p Plan) map[identity.Fingerprint]Dial {
	m := map[identity.Fingerprint]Dial{}
	for _, d := range p.Dial {
		m[d.FP] = d
	}
	return m
}

func TestEmptyNodeDialsRandomPicksFirstThenUpToMaxLinks(t *testing.T) {
	tb := table(20, ViaExchange)
	p := tb.Plan(State{MaxLinks: 8, Now: t0})
	// At most MaxDialling at once; the first two are random picks.
	if len(p.Dial) != MaxDialling {
		t.Fatalf("dials %d, want %d (the dial bound)", len(p.Dial), MaxDialling)
	}
	anchors := 0
	for _, d := range p.Dial {
		if d.Anchor {
			anchors++
		}
		if d.Trial {
			t.Errorf("a trial dial on a node that is not full")
		}
	}
	if anchors != MaxAnchors {
		t.Errorf("random picks %d, want %d", anchors, MaxAnchors)
	}
	// A random pick still being dialled counts as one.
	p = tb.Plan(State{MaxLinks: 8, Busy: []identity.Fingerprint{fp(1)}, BusyAnchors: 1, Now: t0})
	anchors = 0
	for _, d := range p.Dial {
		if d.Anchor {
			anchors++
		}
	}
	if anchors != MaxAnchors-1 || len(p.Dial) != MaxDialling-1 {
		t.Errorf("with one random pick being dialled: %d dials, %d random; want %d and %d", len(p.Dial), anchors, MaxDialling-1, MaxAnchors-1)
	}
	// Those dials under way count: with 6 up and 2 under way nothing more.
	var links []Link
	for i := 1; i <= 6; i++ {
		links = append(links, Link{FP: fp(i), Outbound: true, Anchor: i <= 2, RTT: time.Millisecond})
	}
	p = tb.Plan(State{MaxLinks: 8, Links: links, Busy: []identity.Fingerprint{fp(7), fp(8)}, Now: t0})
	if len(p.Dial) != 0 {
		t.Errorf("dialled %d more with 6 links and 2 dials under way, want 0", len(p.Dial))
	}
}

func TestPicksByRTTThenMDNSThenRest(t *testing.T) {
	tb := table(10, ViaExchange)
	tb.Learn(fp(9), addr(9), ViaMDNS, t0)
	tb.Learn(fp(10), addr(10), ViaMDNS, t0)
	tb.Measured(fp(3), 30*time.Millisecond, true)
	tb.Measured(fp(5), 5*time.Millisecond, true)
	// Random picks are held already; one slot free at a time.
	links := []Link{{FP: fp(100), Outbound: true, Anchor: true}, {FP: fp(101), Outbound: true, Anchor: true}}
	var order []identity.Fingerprint
	for range 4 {
		p := tb.Plan(State{MaxLinks: len(links) + 1, Links: links, Now: t0})
		if len(p.Dial) != 1 {
			t.Fatalf("dials %d with one slot free, want 1", len(p.Dial))
		}
		order = append(order, p.Dial[0].FP)
		links = append(links, Link{FP: p.Dial[0].FP, Outbound: true})
	}
	if order[0] != fp(5) || order[1] != fp(3) {
		t.Errorf("first picks %v, %v; want the measured ones fastest first", order[0].Short(), order[1].Short())
	}
	for _, f := range order[2:] {
		if f != fp(9) && f != fp(10) {
			t.Errorf("third and fourth picks should be the nodes mDNS found; got %v", f.Short())
		}
	}
}

func TestFullNodeDialsNothingAndLeavesStaticAlone(t *testing.T) {
	tb := table(5, ViaMDNS)
	links := []Link{
		{FP: fp(1), Outbound: true, Static: true},
		{FP: fp(2), Outbound: true, Anchor: true},
		{FP: fp(3), Outbound: true, Anchor: true},
		{FP: fp(4), Outbound: true},
	}
	p := tb.Plan(State{MaxLinks: 4, Links: links, Static: []identity.Fingerprint{fp(1), fp(6)}, Now: t0, LastTrial: t0})
	if len(p.Dial)+len(p.Close) != 0 {
		t.Errorf("a full node planned %+v, want nothing", p)
	}
	// A configured peer is the daemon's to dial, never the plan's.
	tb.Learn(fp(6), addr(6), ViaMDNS, t0)
	p = tb.Plan(State{MaxLinks: 8, Links: links, Static: []identity.Fingerprint{fp(1), fp(6)}, Now: t0})
	if _, ok := dialled(p)[fp(6)]; ok {
		t.Errorf("the plan dialled a static peer")
	}
	// Static peers alone filling the slots cause no random picks.
	p = tb.Plan(State{MaxLinks: 4, Links: []Link{
		{FP: fp(1), Outbound: true, Static: true}, {FP: fp(2), Outbound: true, Static: true},
		{FP: fp(3), Outbound: true, Static: true}, {FP: fp(4), Outbound: true, Static: true},
	}, Static: []identity.Fingerprint{fp(1), fp(2), fp(3), fp(4)}, Now: t0, LastTrial: t0})
	if len(p.Dial) != 0 {
		t.Errorf("configured peers filling every slot still led to %d dials", len(p.Dial))
	}
}

func TestInboundLinksCannotTakeEverySlot(t *testing.T) {
	tb := table(10, ViaExchange)
	var links []Link
	for i := 100; i < 108; i++ {
		links = append(links, Link{FP: fp(i)}) // eight neighbours dialled in
	}
	p := tb.Plan(State{MaxLinks: 8, Links: links, Now: t0})
	if len(p.Dial) != MaxAnchors {
		t.Fatalf("with every slot taken by inbound links the node dialled %d, want its %d random picks", len(p.Dial), MaxAnchors)
	}
	for _, d := range p.Dial {
		if !d.Anchor {
			t.Errorf("dial %v beyond max links is not a random pick", d.FP.Short())
		}
	}
}

func TestTinyMaxLinksMakesNoRandomPicks(t *testing.T) {
	tb := table(5, ViaExchange)
	p := tb.Plan(State{MaxLinks: 1, Links: []Link{{FP: fp(100)}}, Now: t0})
	if len(p.Dial) != 0 {
		t.Errorf("--max-links 1 with one inbound link dialled %d, want 0", len(p.Dial))
	}
	if Anchors(1) != 0 || Anchors(4) != 1 || Anchors(8) != 2 || Anchors(32) != 2 {
		t.Errorf("Anchors(1,4,8,32) = %d,%d,%d,%d; want 0,1,2,2", Anchors(1), Anchors(4), Anchors(8), Anchors(32))
	}
}

func fullLinks(worstRTT time.Duration) []Link {
	return []Link{
		{FP: fp(1), Outbound: true, Anchor: true, RTT: 90 * time.Millisecond},
		{FP: fp(2), Outbound: true, Anchor: true, RTT: 80 * time.Millisecond},
		{FP: fp(3), Outbound: true, RTT: 10 * time.Millisecond},
		{FP: fp(4), Outbound: true, RTT: worstRTT},
	}
}

func TestTrialReplacesSlowestPickWhenClearlyFaster(t *testing.T) {
	tb := table(6, ViaExchange)
	links := fullLinks(50 * time.Millisecond)
	// Not yet time to explore.
	if p := tb.Plan(State{MaxLinks: 4, Links: links, Now: t0, LastTrial: t0.Add(-time.Minute)}); len(p.Dial) != 0 {
		t.Fatalf("explored a minute after the last trial: %+v", p.Dial)
	}
	p := tb.Plan(State{MaxLinks: 4, Links: links, Now: t0, LastTrial: t0.Add(-Explore)})
	if len(p.Dial) != 1 || !p.Dial[0].Trial {
		t.Fatalf("a full node due to explore planned %+v, want one trial", p.Dial)
	}
	tr := p.Dial[0].FP
	if tr == fp(1) || tr == fp(2) || tr == fp(3) || tr == fp(4) {
		t.Fatalf("trial of a linked node %v", tr.Short())
	}
	// Too young to judge: nothing.
	young := append(links, Link{FP: tr, Outbound: true, Trial: true, RTT: time.Millisecond, Age: time.Second})
	if p := tb.Plan(State{MaxLinks: 4, Links: young, Now: t0}); p.EndTrial || len(p.Close) != 0 || len(p.Dial) != 0 {
		t.Errorf("judged a trial after a second: %+v", p)
	}
	// Faster: the slowest link picked by RTT goes, never a random pick.
	fast := append(links, Link{FP: tr, Outbound: true, Trial: true, RTT: 20 * time.Millisecond, Age: JudgeAfter})
	p = tb.Plan(State{MaxLinks: 4, Links: fast, Now: t0})
	if !p.EndTrial || len(p.Close) != 1 || p.Close[0] != fp(4) {
		t.Errorf("a 20 ms trial against a 50 ms pick: plan %+v, want fp(4) closed", p)
	}
	// Only a little faster: the trial goes.
	close := append(links, Link{FP: tr, Outbound: true, Trial: true, RTT: 45 * time.Millisecond, Age: JudgeAfter})
	p = tb.Plan(State{MaxLinks: 4, Links: close, Now: t0})
	if !p.EndTrial || len(p.Close) != 1 || p.Close[0] != tr {
		t.Errorf("a 45 ms trial against a 50 ms pick: plan %+v, want the trial closed", p)
	}
}

func TestNoTrialWithoutAReplaceableLink(t *testing.T) {
	tb := table(6, ViaExchange)
	links := []Link{
		{FP: fp(1), Outbound: true, Anchor: true}, {FP: fp(2), Outbound: true, Anchor: true},
		{FP: fp(3)}, {FP: fp(4)},
	}
	if p := tb.Plan(State{MaxLinks: 4, Links: links, Now: t0}); len(p.Dial) != 0 {
		t.Errorf("explored with nothing it could replace: %+v", p.Dial)
	}
}

func TestFailedDialBacksOff(t *testing.T) {
	tb := table(1, ViaMDNS)
	tb.Failed(fp(1), t0)
	if p := tb.Plan(State{MaxLinks: 8, Now: t0.Add(retryMin - time.Second)}); len(p.Dial) != 0 {
		t.Errorf("redialled a failed node before its backoff")
	}
	if p := tb.Plan(State{MaxLinks: 8, Now: t0.Add(retryMin)}); len(p.Dial) != 1 {
		t.Errorf("did not redial after the backoff")
	}
	for range 20 {
		tb.Failed(fp(1), t0)
	}
	if p := tb.Plan(State{MaxLinks: 8, Now: t0.Add(retryMax)}); len(p.Dial) != 1 {
		t.Errorf("backoff grew past %v", retryMax)
	}
}

func TestTableBoundedAndForgetsSilentNodes(t *testing.T) {
	tb := NewTable(16, rand.New(rand.NewPCG(3, 4)))
	for i := 1; i <= 1000; i++ {
		tb.Learn(fp(i), addr(i), ViaExchange, t0.Add(time.Duration(i)*time.Second))
	}
	if tb.Len() != 16 {
		t.Errorf("table holds %d after 1000 nodes, want its bound 16", tb.Len())
	}
	// The newest stayed.
	p := tb.Plan(State{MaxLinks: 100, Now: t0.Add(1000 * time.Second)})
	for _, d := range p.Dial {
		if n := int(d.FP[0])<<8 | int(d.FP[1]); n <= 1000-16 {
			t.Errorf("kept an old candidate %d", n)
		}
	}
	tb.Plan(State{MaxLinks: 0, Now: t0.Add(1000*time.Second + forget + time.Second)})
	if tb.Len() != 0 {
		t.Errorf("%d candidates not heard of for %v still held", tb.Len(), forget)
	}
	// Junk is ignored.
	tb.Learn(identity.Fingerprint{}, addr(1), ViaMDNS, t0)
	tb.Learn(fp(1), nil, ViaMDNS, t0)
	if tb.Len() != 0 {
		t.Errorf("a zero fingerprint or no address was learnt")
	}
}

func TestMDNSMarkSurvivesExchangeReports(t *testing.T) {
	tb := table(0, ViaExchange)
	tb.Learn(fp(1), addr(1), ViaMDNS, t0)
	tb.Learn(fp(1), addr(1), ViaExchange, t0.Add(time.Minute))
	p := tb.Plan(State{MaxLinks: 8, Now: t0.Add(time.Minute)})
	if len(p.Dial) != 1 || p.Dial[0].Via != ViaMDNS {
		t.Errorf("a node found by mDNS and then by exchange is dialled via %+v, want mdns", p.Dial)
	}
}

func TestFloodOfExchangeNodesKeepsMDNSAndLinkedOnes(t *testing.T) {
	tb := NewTable(16, rand.New(rand.NewPCG(5, 6)))
	tb.Learn(fp(1), addr(1), ViaMDNS, t0)
	tb.Learn(fp(2), addr(2), ViaExchange, t0)
	tb.Measured(fp(2), 3*time.Millisecond, true) // linked once
	for i := 100; i < 1100; i++ {
		tb.Learn(fp(i), addr(i), ViaExchange, t0.Add(time.Duration(i)*time.Second))
	}
	now := t0.Add(1100 * time.Second)
	// With the random picks held, the RTT and mDNS picks come first.
	tb2 := tb.Plan(State{MaxLinks: 100, Links: []Link{{FP: fp(500), Outbound: true, Anchor: true}, {FP: fp(501), Outbound: true, Anchor: true}}, Now: now})
	d := dialled(tb2)
	if _, ok := d[fp(1)]; !ok {
		t.Errorf("a node mDNS found was evicted by 1000 nodes learnt by exchange")
	}
	if _, ok := d[fp(2)]; !ok {
		t.Errorf("a measured node was evicted by 1000 nodes learnt by exchange")
	}
}

func TestCooldownAndUnstableLinks(t *testing.T) {
	tb := table(1, ViaExchange)
	tb.Cooldown(fp(1), Explore, t0)
	if p := tb.Plan(State{MaxLinks: 8, Now: t0.Add(Explore - time.Second)}); len(p.Dial) != 0 {
		t.Errorf("dialled a node that dropped us for a faster link before its cooldown")
	}
	if p := tb.Plan(State{MaxLinks: 8, Now: t0.Add(Explore)}); len(p.Dial) != 1 {
		t.Errorf("did not dial it after the cooldown")
	}
	// A stable link does not clear a cooldown.
	tb.Cooldown(fp(1), Explore, t0)
	tb.Measured(fp(1), time.Millisecond, true)
	if p := tb.Plan(State{MaxLinks: 8, Now: t0.Add(time.Second)}); len(p.Dial) != 0 {
		t.Errorf("a stable link cleared the cooldown")
	}
	t0 := t0.Add(Explore)
	// A link that does not last does not clear the backoff.
	tb.Failed(fp(1), t0)
	tb.Measured(fp(1), time.Millisecond, false)
	if p := tb.Plan(State{MaxLinks: 8, Now: t0.Add(time.Second)}); len(p.Dial) != 0 {
		t.Errorf("a short-lived link cleared the backoff")
	}
	tb.Measured(fp(1), time.Millisecond, true)
	if p := tb.Plan(State{MaxLinks: 8, Now: t0.Add(time.Second)}); len(p.Dial) != 1 {
		t.Errorf("a stable link did not clear the backoff")
	}
}
