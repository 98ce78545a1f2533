package relay

import (
	"fmt"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/quicproquo/qpq/gossip/gossiptest"
	"github.com/quicproquo/qpq/gossip/store"
	"github.com/quicproquo/qpq/mesh/identity"
)

// BenchmarkAntiEntropy measures one anti-entropy round of one link at
// 1k, 10k and 100k stored envelopes, on real bbolt stores in $TMPDIR
// (filled once per size and shared by both forms: run with TMPDIR on
// tmpfs, filling 100k durable puts on disk takes minutes). Both sides
// hold the same envelopes (a neighbour in step, the usual case), so the
// figures are the round's fixed cost.
//
//   - old: today's form, per link: build a whole-store filter, and the
//     neighbour tests every id it holds against it.
//   - new: the partial form: build the round's range summaries (once per
//     round for all links; build-ms), and the neighbour tests each range
//     against its ids in that range only (handle-ms): its cost when
//     every range differs.
//   - agreed: the partial form when the neighbour's own last round shows
//     it holds the same ids in every range (digest and count match): it
//     reads nothing.
//
// ms/round is build + handle, as one link pays them; for the new form a
// node with L links pays build once and handle L times, so its cost per
// link is handle-ms + build-ms/L. bytes/round is the summaries' filters.
func BenchmarkAntiEntropy(b *testing.B) {
	sizes := []struct {
		name string
		n    int
	}{{"1k", 1000}, {"10k", 10_000}, {"100k", 100_000}}
	dir := b.TempDir()
	stores := map[int]*store.Store{}
	defer func() {
		for _, st := range stores {
			st.Close()
		}
	}()
	open := func(b *testing.B, n int) *store.Store {
		if st := stores[n]; st != nil {
			return st
		}
		st, err := store.Open(filepath.Join(dir, fmt.Sprintf("%d.db", n)), store.Options{MaxBytes: 1 << 30, MaxPerSource: 1 << 30, MaxPerMailbox: 1 << 30, MaxPerMailboxSource: 1 << 30})
		if err != nil {
			b.Fatal(err)
		}
		for range n {
			if _, err := st.Put(gossiptest.DM(nil, nil, 24*3600, 1), "bench"); err != nil {
				b.Fatal(err)
			}
		}
		stores[n] = st
		return st
	}
	for _, form := range []string{"old", "new", "agreed"} {
		b.Run(form, func(b *testing.B) {
			for _, sz := range sizes {
				b.Run(sz.name, func(b *testing.B) {
					st := open(b, sz.n)
					// The rate limit is not what is measured: each call
					// sees a minute pass.
					var tick atomic.Int64
					now := func() time.Time { return time.Unix(0, tick.Add(int64(time.Minute))) }
					sender := New(Options{Store: st, Now: now})
					defer sender.Close()
					receiver := New(Options{Store: st, Now: now})
					defer receiver.Close()
					from := identity.Fingerprint{1}
					defer receiver.AddPeer(from, newRecPeer())()
					if form == "agreed" {
						// The receiver's own round, kept fresh: its bucket
						// table shows every range in step.
						at := time.Now()
						receiver.ae.clock = func() time.Time { return at }
						if _, err := receiver.round(2, false); err != nil {
							b.Fatal(err)
						}
					}
					var build, handle time.Duration
					var bytes, msgs int
					b.ResetTimer()
					for range b.N {
						t0 := time.Now()
						var sums []Summary
						if form == "old" {
							s, err := sender.MakeSummary()
							if err != nil {
								b.Fatal(err)
							}
							sums = []Summary{s}
						} else {
							var err error
							if sums, _, err = sender.makeParts(); err != nil {
								b.Fatal(err)
							}
						}
						t1 := time.Now()
						for _, s := range sums {
							if err := receiver.HandleSummary(from, s); err != nil {
								b.Fatal(err)
							}
							bytes += len(s.Filter)
						}
						msgs += len(sums)
						build += t1.Sub(t0)
						handle += time.Since(t1)
					}
					ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) / float64(b.N) }
					b.ReportMetric(ms(build+handle), "ms/round")
					b.ReportMetric(ms(build), "build-ms")
					b.ReportMetric(ms(handle), "handle-ms")
					b.ReportMetric(float64(bytes)/float64(b.N), "bytes/round")
					b.ReportMetric(float64(msgs)/float64(b.N), "msgs/round")
					b.ReportMetric(0, "ns/op")
				})
			}
		})
	}
}
