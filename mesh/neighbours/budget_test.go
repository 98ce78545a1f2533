package neighbours

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/quicproquo/qpq/mesh/identity"
)

// run asks for a plan every step for d, as the daemon does, with every
// planned dial failing at once; it returns the addresses dialled.
func run(tb *Table, start time.Time, d, step time.Duration) []string {
	var dialled []string
	for now := start; now.Before(start.Add(d)); now = now.Add(step) {
		p := tb.Plan(State{MaxLinks: 8, Now: now})
		for _, dl := range p.Dial {
			dialled = append(dialled, dl.Addrs...)
			tb.Failed(dl.FP, now)
		}
	}
	return dialled
}

// A neighbour relaying descriptors of identities it made up, each naming
// addresses it chose (issue 9: 24 dials in 50 s), gets a few dials to
// addresses never reached, then one a minute; the whole node, however
// many sources it hears of, one every 30 s.
func TestMadeUpDescriptorsBuyFewDials(t *testing.T) {
	tb := NewTable(256, rand.New(rand.NewPCG(3, 4)))
	for i := 1; i <= 200; i++ {
		addrs := []string{fmt.Sprintf("192.0.2.%d:7443", i), fmt.Sprintf("198.51.100.%d:7443", i)}
		tb.LearnFrom(fp(i), addrs, ViaExchange, "link attacker", t0)
	}
	got := run(tb, t0, 50*time.Second, time.Second)
	if want := NewAddrBurst; len(got) != want {
		t.Errorf("one source's made-up nodes got %d dials in 50 s, want %d", len(got), want)
	}
	got = run(tb, t0.Add(50*time.Second), 10*time.Minute, time.Second)
	if want := 10; len(got) < want-1 || len(got) > want+1 {
		t.Errorf("then %d dials in 10 minutes, want about %d (one a minute)", len(got), want)
	}

	// Made-up sources (the signer of each descriptor, when the relaying
	// neighbour is not known) are held by the node-wide budget.
	tb = NewTable(256, rand.New(rand.NewPCG(3, 4)))
	for i := 1; i <= 200; i++ {
		tb.LearnFrom(fp(i), []string{fmt.Sprintf("192.0.2.%d:7443", i)}, ViaExchange, fmt.Sprintf("signer %d", i), t0)
	}
	if got := run(tb, t0, 50*time.Second, time.Second); len(got) > NewAddrBurstAll+2 {
		t.Errorf("200 made-up sources got %d dials in 50 s, want at most %d", len(got), NewAddrBurstAll+2)
	}
}

// A descriptor's many never-reached addresses each cost a token: one
// descriptor naming MaxAddrs addresses does not buy MaxAddrs dials.
func TestEachNewAddressCosts(t *testing.T) {
	tb := NewTable(256, rand.New(rand.NewPCG(3, 4)))
	var addrs []string
	for i := range 8 {
		addrs = append(addrs, fmt.Sprintf("192.0.2.%d:7443", i+1))
	}
	tb.LearnFrom(fp(1), addrs, ViaExchange, "link x", t0)
	p := tb.Plan(State{MaxLinks: 8, Now: t0})
	if len(p.Dial) != 1 || len(p.Dial[0].Addrs) != NewAddrBurst {
		t.Fatalf("plan %+v; want one dial of %d addresses", p.Dial, NewAddrBurst)
	}
}

// The budget of one source is its own: an attacker's neighbour spending
// it leaves honest neighbours' descriptors dialled; addresses reached
// before, and those mDNS reports, never wait.
func TestBudgetIsPerSourceAndSparesReachedAddresses(t *testing.T) {
	tb := NewTable(256, rand.New(rand.NewPCG(3, 4)))
	for i := 1; i <= 50; i++ {
		tb.LearnFrom(fp(i), []string{fmt.Sprintf("192.0.2.%d:7443", i)}, ViaExchange, "link attacker", t0)
	}
	run(tb, t0, 5*time.Second, time.Second)

	honest := fp(1000)
	tb.LearnFrom(honest, []string{"203.0.113.1:7443"}, ViaExchange, "link honest", t0.Add(5*time.Second))
	if _, ok := dialled(tb.Plan(State{MaxLinks: 8, Now: t0.Add(5 * time.Second)}))[honest]; !ok {
		t.Errorf("a node relayed by an honest neighbour waits for the attacker's budget")
	}

	// Spend the node-wide budget too, then: an address reached before and
	// one on a shared link are dialled at once.
	for i := 1; i <= 50; i++ {
		tb.LearnFrom(fp(2000+i), []string{fmt.Sprintf("198.51.100.%d:7443", i)}, ViaExchange, fmt.Sprintf("signer %d", i), t0.Add(5*time.Second))
	}
	run(tb, t0.Add(5*time.Second), 2*time.Second, time.Second)
	now := t0.Add(7 * time.Second)
	back := fp(3000)
	tb.Reached("203.0.113.9:7443", t0)
	tb.LearnFrom(back, []string{"203.0.113.9:7443"}, ViaExchange, "link attacker", now)
	near := fp(3001)
	tb.Learn(near, []string{"10.1.1.1:7443"}, ViaMDNS, now)
	p := dialled(tb.Plan(State{MaxLinks: 8, Busy: []identity.Fingerprint{}, Now: now}))
	if _, ok := p[back]; !ok {
		t.Errorf("a node at an address reached before was not dialled: %v", p)
	}
	if _, ok := p[near]; !ok {
		t.Errorf("a node mDNS found was not dialled: %v", p)
	}
}
