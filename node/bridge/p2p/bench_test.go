package p2p_test

import (
	"context"
	"testing"
	"time"

	"github.com/quicproquo/qpq/gossip"
	"github.com/quicproquo/qpq/mesh/identity"
	"github.com/quicproquo/qpq/mesh/testkit"
	"github.com/quicproquo/qpq/node/daemon/daemontest"
	"github.com/quicproquo/qpq/node/e2e"
	"github.com/quicproquo/qpq/node/e2e/e2etest"
)

// BenchmarkDMLatency is one DM from a client of one node until bob, a
// client of the next, has it: across a bridge link (libp2p QUIC on
// 127.0.0.1 between two islands' bridges) and, the anchor in the same
// run, across a direct qpq link between two nodes of one island.
func BenchmarkDMLatency(b *testing.B) {
	b.Run("direct", func(b *testing.B) {
		ns := daemontest.Line(b, daemontest.Config(b.TempDir(), "a"), daemontest.Config(b.TempDir(), "b"))
		dmLatency(b, ns[0], ns[1])
	})
	b.Run("bridge", func(b *testing.B) {
		dir := b.TempDir()
		nc, sc := daemontest.Config(dir, "nord"), daemontest.Config(dir, "sued")
		nc.Bridge.Island, sc.Bridge.Island = "nord", "sued"
		// The link's latency, not its rate limit (50 a second by
		// default, which 200 DMs and their receipts would reach).
		nc.Bridge.Rate, sc.Bridge.Rate = 10000, 10000
		nb, sb := daemontest.Start(b, nc), daemontest.Start(b, sc)
		bs := startBridge(b, sb, loopback, []identity.Fingerprint{nb.ID.Fingerprint()})
		startBridge(b, nb, loopback, []identity.Fingerprint{sb.ID.Fingerprint()}, bs.Addrs()[0])
		testkit.WaitFor(b, 30*time.Second, "the bridges to link", func() bool { return nb.D.Bridged(sb.ID.Fingerprint()) })
		dmLatency(b, nb, sb)
	})
}

func dmLatency(b *testing.B, from, to *daemontest.Node) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	alice, bob := e2e.NewUser(), e2e.NewUser()
	bundle := e2etest.BundleOf(b, bob)
	ca, cb := dial(b, from), dial(b, to)
	signed, _ := bob.SignedBundle(1, time.Hour)
	mb, err := cb.Authenticate(ctx, bob, signed)
	if err != nil {
		b.Fatal(err)
	}
	defer mb.Release()
	b.ResetTimer()
	for range b.N {
		b.StopTimer()
		dm := e2etest.SealDM(b, alice, bundle, []byte("latency"))
		b.StartTimer()
		if _, err := ca.Enqueue(ctx, dm); err != nil {
			b.Fatal(err)
		}
		var got *gossip.Envelope
		for got == nil {
			envs, err := mb.Fetch(ctx, 0, 10*time.Second)
			if err != nil {
				b.Fatal(err)
			}
			for i := range envs {
				if envs[i].ID == dm.ID {
					got = &envs[i]
				}
			}
		}
		b.StopTimer()
		// Acknowledged, so the next fetch sees only the next DM.
		m, err := e2e.OpenDM(bob, got.Payload)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := mb.Ack(ctx, [][]byte{m.ReceiptSecret[:]}); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
}
