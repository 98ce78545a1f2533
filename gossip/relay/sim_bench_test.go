package relay

import (
	"math/rand/v2"
	"testing"

	"github.com/quicproquo/qpq/gossip/seen"
	"github.com/quicproquo/qpq/gossip/store"
)

// Benchmarks over the simulation in sim_test.go. They report figures
// (b.ReportMetric) and assert nothing; each iteration builds a fresh
// 50-node network (timer stopped) and spreads simBenchCount broadcasts.

const (
	simBenchNodes = 50
	simBenchCount = 1000
	simBenchBatch = 100
)

// BenchmarkBroadcastSpread reports link transmissions per broadcast and
// their ratio to the N-1 of a spanning tree, and the raise notices per
// broadcast (not transmissions of the message).
func BenchmarkBroadcastSpread(b *testing.B) {
	var tx, raises, delivered float64
	for i := range b.N {
		b.StopTimer()
		edges, seed, _ := randomGraph(b, simBenchNodes, uint64(100+i), 7)
		h := newSim(b, simBenchNodes, simOptions{})
		h.linkAll(edges)
		b.StartTimer()
		ids := h.runBroadcasts(rand.New(rand.NewPCG(seed, 2)), simBenchCount, simBenchBatch, simMaxHops)
		b.StopTimer()
		c := h.counts()
		tx += float64(c.tx) / simBenchCount
		raises += float64(c.raises) / simBenchCount
		delivered += h.deliveryRatio(ids)
		h.close()
		b.StartTimer()
	}
	n := float64(b.N)
	b.ReportMetric(tx/n, "tx/broadcast")
	b.ReportMetric(tx/n/(simBenchNodes-1), "tx/spanning-tree")
	b.ReportMetric(raises/n, "raises/broadcast")
	b.ReportMetric(delivered/n, "delivery-ratio")
	b.ReportMetric(0, "ns/op")
}

// BenchmarkBroadcastDelivery10PctLoss reports the fraction of (node,
// message) pairs delivered when every link loses 10% of its envelope
// sends at random: "push-delivery" is after the pushes alone settle,
// "ae-delivery" after one anti-entropy round (each engine sends its
// summary to each neighbour once; the pushes that answer it are lossy
// too; summaries themselves are not lost).
//
// failed-push: a loss makes the push report an error (a QUIC push RPC
// that fails), so the sender does not count the batch as sent.
// silent: a loss looks delivered to the sender (a datagram lost with no
// acknowledgement), so it remembers the neighbour as having the message.
func BenchmarkBroadcastDelivery10PctLoss(b *testing.B) {
	for _, mode := range []struct {
		name   string
		silent bool
	}{{"failed-push", false}, {"silent", true}} {
		b.Run(mode.name, func(b *testing.B) {
			var push, ae, lost float64
			for i := range b.N {
				b.StopTimer()
				edges, seed, _ := randomGraph(b, simBenchNodes, uint64(200+i), 7)
				h := newSim(b, simBenchNodes, simOptions{Drop: 0.10, SilentDrop: mode.silent, Seed: seed})
				h.linkAll(edges)
				b.StartTimer()
				ids := h.runBroadcasts(rand.New(rand.NewPCG(seed, 2)), simBenchCount, simBenchBatch, simMaxHops)
				b.StopTimer()
				push += h.deliveryRatio(ids)
				b.StartTimer()
				h.antiEntropy()
				b.StopTimer()
				ae += h.deliveryRatio(ids)
				c := h.counts()
				lost += float64(c.dropped) / float64(c.tx)
				h.close()
				b.StartTimer()
			}
			n := float64(b.N)
			b.ReportMetric(push/n, "push-delivery")
			b.ReportMetric(ae/n, "ae-delivery")
			b.ReportMetric(lost/n, "sends-lost")
			b.ReportMetric(0, "ns/op")
		})
	}
}

// BenchmarkSeenSetMemory reports the seen-set's memory at the engine's
// default configuration (seen.Options zero: DefaultCapacity ids per
// generation at DefaultFPRate, an exact set of twice that).
func BenchmarkSeenSetMemory(b *testing.B) {
	st, err := store.Open(simDir(b)+"/seen.db", store.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	var s seen.Stats
	for range b.N {
		e := New(Options{Store: st})
		s = e.SeenStats()
		e.Close()
	}
	b.ReportMetric(float64(s.MemoryBytes), "seen-bytes")
	b.ReportMetric(float64(s.MemoryBytes)/float64(2*s.Capacity), "bytes/remembered-id")
	b.ReportMetric(float64(s.Capacity), "ids/generation")
}
