package daemon_test

import (
	"context"
	"fmt"
	"syscall"
	"testing"
	"time"

	"github.com/quicproquo/qpq/mesh/testkit"
	"github.com/quicproquo/qpq/node/daemon/daemontest"
	"github.com/quicproquo/qpq/node/e2e"
	"github.com/quicproquo/qpq/node/e2e/e2etest"
)

// cpuTime is the process's user and system CPU so far.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkDecoys is what cover costs: two linked nodes with decoys at a
// rate, idle otherwise, for a fixed span; it reports the bytes a second
// each link direction sends (UDP payload, QUIC framing included) and the
// CPU per node, beside the same pair with decoys off (rate 0, the
// anchor: probes and keep-alives only).
func BenchmarkDecoys(b *testing.B) {
	span := 20 * time.Second
	for _, rate := range []float64{0, 0.1, 1, 10} {
		b.Run(fmt.Sprintf("rate=%g", rate), func(b *testing.B) {
			dir := b.TempDir()
			a, c := daemontest.Config(dir, "a"), daemontest.Config(dir, "b")
			a.DecoyRate, c.DecoyRate = rate, rate
			ns := daemontest.Line(b, a, c)
			testkit.WaitFor(b, 20*time.Second, "the pair to settle", func() bool { return ns[0].D.Status().Onion.Relays == 2 })
			time.Sleep(time.Second)
			sent := func() uint64 {
				var n uint64
				for _, p := range ns[0].D.Status().Peers {
					n += p.BytesSent
				}
				return n
			}
			b.ResetTimer()
			for b.Loop() {
				s0, c0, t0 := sent(), cpuTime(b), time.Now()
				time.Sleep(span)
				el := time.Since(t0).Seconds()
				b.ReportMetric(float64(sent()-s0)/el, "B/s/link")
				b.ReportMetric(float64(cpuTime(b)-c0)/float64(time.Second)/el/2*100, "%cpu/node")
			}
		})
	}
}

// BenchmarkStreamLatency is what the message stream costs a DM: the
// time from a client handing a DM to its node to the recipient's client
// at the neighbour fetching it, with decoys at a rate on both nodes
// (the DM's push and its answer wait for cover ticks), beside the same
// pair with decoys off (rate 0, the anchor: the push goes at once).
func BenchmarkStreamLatency(b *testing.B) {
	for _, rate := range []float64{0, 1, 10, 50} {
		b.Run(fmt.Sprintf("rate=%g", rate), func(b *testing.B) {
			ctx := context.Background()
			dir := b.TempDir()
			a, c := daemontest.Config(dir, "a"), daemontest.Config(dir, "b")
			a.DecoyRate, c.DecoyRate = rate, rate
			ns := daemontest.Line(b, a, c)
			alice, bob := userAt(b, ctx, ns[0], e2e.NewUser()), userAt(b, ctx, ns[1], e2e.NewUser())
			bundle := bundleAt(b, ctx, alice, bob.u.Fingerprint())
			var total time.Duration
			for b.Loop() {
				b.StopTimer()
				env := e2etest.SealDM(b, alice.u, bundle, []byte("hi"))
				b.StartTimer()
				t0 := time.Now()
				if _, err := alice.c.Enqueue(ctx, env); err != nil {
					b.Fatal(err)
				}
				envs, err := bob.mb.Fetch(ctx, 1, 30*time.Second)
				if err != nil || len(envs) != 1 || envs[0].ID != env.ID {
					b.Fatalf("bob fetched %d DMs (%v)", len(envs), err)
				}
				total += time.Since(t0)
				b.StopTimer()
				m, err := e2e.OpenDM(bob.u, envs[0].Payload)
				if err != nil {
					b.Fatal(err)
				}
				if _, err := bob.mb.Ack(ctx, [][]byte{m.ReceiptSecret[:]}); err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
			}
			b.ReportMetric(float64(total.Microseconds())/1000/float64(b.N), "ms/DM")
			if st := ns[0].D.Status().Cells; rate >= 1 && st.Streamed != 1 {
				b.Fatalf("the link is not streamed at rate %g: %+v", rate, st)
			}
		})
	}
}
