package placement

import (
	"slices"
	"testing"
)

func smallSimConfig() simConfig {
	c := defaultSimConfig()
	c.Nodes, c.Users, c.DMs = 80, 160, 400
	return c
}

func logResult(t testing.TB, name string, r simResult) {
	t.Logf("%-22s nodes %d edges %d diam %d deg %.1f | tx/DM %.1f (flood %.1f place %.1f fetch %.1f pullctl %.1f receipt %.1f handover %.1f fallback %.1f) copies/DM %.2f delivered %.4f fallback %.4f (unreachable %d not-fetched %d timeout %d) path %.2f pullctl/node/day %.1f",
		name, r.Nodes, r.Edges, r.Diameter, r.MeanDegree, r.perDM(r.tx()),
		r.perDM(r.TxFlood), r.perDM(r.TxPlace), r.perDM(r.TxFetch), r.perDM(r.TxPullCtl), r.perDM(r.TxReceipt), r.perDM(r.TxHandover), r.perDM(r.TxFallback),
		r.perDM(r.Copies), r.deliveryRatio(), float64(r.Fallback)/float64(max(r.DMs, 1)), r.FbUnreachable, r.FbNotFetched, r.FbTimeout, r.meanPath(),
		float64(r.TxPullCtlAll)/float64(r.Nodes)/max(r.RunDays, 1))
}

// TestSmallMesh is the fast version of BenchmarkMesh500: on an 80-node
// city mesh with 10% of nodes down at any time, every DM reaches its
// recipient within the TTL both ways, and placement stores and sends less
// per DM than flooding.
func TestSmallMesh(t *testing.T) {
	cfg := smallSimConfig()
	pl, fl := runSim(cfg, true)
	if again, _ := runSim(cfg, false); again != pl {
		t.Fatalf("same seed, different figures:\n%+v\n%+v", pl, again)
	}
	logResult(t, "flooding", fl)
	logResult(t, "placement", pl)
	if pl.Diameter > cfg.HopLimit {
		t.Fatalf("giant component's diameter %d exceeds the DM hop limit %d", pl.Diameter, cfg.HopLimit)
	}
	if pl.MeanDegree < 7 || pl.MeanDegree > 10 {
		t.Fatalf("mean degree %.1f, want 7-10", pl.MeanDegree)
	}
	for name, r := range map[string]simResult{"flooding": fl, "placement": pl} {
		if r.DMs != cfg.DMs || r.Delivered != r.DMs {
			t.Errorf("%s: delivered %d of %d DMs (sent %d)", name, r.Delivered, r.DMs, cfg.DMs)
		}
	}
	if pl.Copies >= fl.Copies || pl.tx() >= fl.tx() {
		t.Errorf("placement per DM: %.1f copies, %.1f transmissions; flooding: %.1f, %.1f; want placement below both",
			pl.perDM(pl.Copies), pl.perDM(pl.tx()), fl.perDM(fl.Copies), fl.perDM(fl.tx()))
	}
}

// TestFallbackWhenPlacementFails: with every placement node hostile
// (accepting and dropping), each DM still arrives, by the sender's flood
// after the receipt timeout; the fallback is counted for each.
func TestFallbackWhenPlacementFails(t *testing.T) {
	cfg := smallSimConfig()
	cfg.DMs = 100
	cfg.HostileFrac = 1 // every node drops what it is asked to store...
	s := newSim(cfg, false)
	for i := range s.hostile {
		// ...but relays floods: only placement fails.
		s.hostile[i] = false
	}
	s.dropPlaced = true
	r := s.run()
	logResult(t, "all placement dropped", r)
	if r.Delivered != r.DMs || r.Fallback != r.DMs {
		t.Fatalf("delivered %d, fell back %d, of %d DMs; want all of each", r.Delivered, r.Fallback, r.DMs)
	}
}

// TestFallbackWhenPlacementDown: every DM goes to one recipient whose
// bucket's placement nodes are down for the whole run; each DM still
// arrives, through the sender's flood, and each is counted as a fallback.
func TestFallbackWhenPlacementDown(t *testing.T) {
	cfg := smallSimConfig()
	cfg.DMs = 60
	s := newSim(cfg, false)
	victim := int32(-1)
	var down []int32
	for u := range int32(cfg.Users) {
		down = s.place(s.home[u], s.bucket[u], s.opts.K)
		if !slices.Contains(down, s.home[u]) {
			victim = u
			break
		}
	}
	for _, p := range down {
		s.nodeSched[p] = schedule{start: false}
		s.up[p] = false
	}
	// Senders must stay connected to the victim's node without the downed
	// ones (a node whose only neighbour is down can deliver nothing).
	alive := make([]bool, s.n)
	for i := range alive {
		alive[i] = !slices.Contains(down, int32(i))
	}
	reach := bfs(s.g.adj, alive, s.home[victim])
	for i := range s.sendTo {
		s.sendTo[i] = victim
		for s.sendFrom[i] == victim || reach[s.home[s.sendFrom[i]]] < 0 {
			s.sendFrom[i] = (s.sendFrom[i] + 1) % int32(cfg.Users)
		}
	}
	r := s.run()
	logResult(t, "placement nodes down", r)
	if r.Delivered != r.DMs || r.Fallback != r.DMs {
		t.Fatalf("delivered %d, fell back %d, of %d DMs; want all of each", r.Delivered, r.Fallback, r.DMs)
	}
}

// TestDifferingViewsDeliver: every node knows a random 90% of descriptors;
// DMs still all arrive.
func TestDifferingViewsDeliver(t *testing.T) {
	cfg := smallSimConfig()
	cfg.ViewFrac = 0.9
	r := newSim(cfg, false).run()
	logResult(t, "views 90%", r)
	if r.Delivered != r.DMs {
		t.Fatalf("delivered %d of %d DMs with differing views", r.Delivered, r.DMs)
	}
}

// BenchmarkMesh500 prints the figures of issue 12's 500-node simulation:
// per DM, link transmissions (receipts included), stored copies, delivery
// within the TTL and the fallback fraction, for flooding and placement,
// and the mean sender-to-mailbox path with the goal's bound (3x it plus
// the fetch). Each scenario is a sub-benchmark; b.N only repeats the run.
func BenchmarkMesh500(b *testing.B) {
	base := defaultSimConfig()
	type scenario struct {
		name  string
		cfg   func(*simConfig)
		flood bool
	}
	for _, sc := range []scenario{
		{"base", func(*simConfig) {}, true},
		{"views90", func(c *simConfig) { c.ViewFrac = 0.9 }, false},
		{"hostile5", func(c *simConfig) { c.HostileFrac = 0.05 }, true},
		// The giant component's diameter exceeds the default hop limit
		// of 16, so today's flooding misses far recipients; with the
		// maximum hop limit it reaches them, at its full cost.
		{"hop32", func(c *simConfig) { c.HopLimit = 32 }, true},
		// The bucket width trades the fetch (every node watching a bucket
		// fetches each of its DMs) against how many users share a pull.
		{"bits6", func(c *simConfig) { c.Opts.BucketBits = 6 }, false},
		{"bits10", func(c *simConfig) { c.Opts.BucketBits = 10 }, false},
	} {
		b.Run(sc.name, func(b *testing.B) {
			cfg := base
			sc.cfg(&cfg)
			var pl, fl simResult
			for b.Loop() {
				pl, fl = runSim(cfg, sc.flood)
			}
			report(b, "place", pl)
			b.ReportMetric(3*pl.meanPath()+pl.perDM(pl.TxFetch+pl.TxPullCtl), "place-goal-tx/DM")
			b.ReportMetric(pl.meanPath(), "path-hops")
			b.ReportMetric(float64(pl.Diameter), "diameter")
			b.ReportMetric(pl.MeanDegree, "mean-degree")
			b.ReportMetric(float64(pl.Nodes), "giant-nodes")
			if sc.flood {
				report(b, "flood", fl)
			}
			logResult(b, sc.name+" placement", pl)
			if sc.flood {
				logResult(b, sc.name+" flooding", fl)
			}
		})
	}
}

func report(b *testing.B, mode string, r simResult) {
	b.ReportMetric(r.perDM(r.tx()), mode+"-tx/DM")
	b.ReportMetric(r.perDM(r.Copies), mode+"-copies/DM")
	b.ReportMetric(r.deliveryRatio(), mode+"-delivered")
	b.ReportMetric(float64(r.Fallback)/float64(max(r.DMs, 1)), mode+"-fallback")
	if mode == "place" {
		b.ReportMetric(r.perDM(r.TxPlace), mode+"-send-tx/DM")
		b.ReportMetric(r.perDM(r.TxFetch), mode+"-fetch-tx/DM")
		b.ReportMetric(r.perDM(r.TxPullCtl), mode+"-pullctl-tx/DM")
		b.ReportMetric(r.perDM(r.TxReceipt), mode+"-receipt-tx/DM")
		b.ReportMetric(r.perDM(r.TxFallback), mode+"-fallback-tx/DM")
		b.ReportMetric(float64(r.TxPullCtlAll)/float64(r.Nodes)/max(r.RunDays, 1), mode+"-pullctl-tx/node/day")
	}
}
