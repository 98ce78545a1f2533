package daemon_test

import (
	"fmt"
	"syscall"
	"testing"
	"time"

	"github.com/quicproquo/qpq/mesh/testkit"
	"github.com/quicproquo/qpq/node/daemon/daemontest"
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
