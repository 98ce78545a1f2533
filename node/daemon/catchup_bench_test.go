package daemon_test

import (
	"context"
	"crypto/rand"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/quicproquo/qpq/gossip"
	"github.com/quicproquo/qpq/node/client"
	"github.com/quicproquo/qpq/node/config"
	"github.com/quicproquo/qpq/node/daemon"
	"github.com/quicproquo/qpq/node/e2e"
	"github.com/quicproquo/qpq/schemas"

	"github.com/quicproquo/qpq/node/daemon/daemontest"
)

// The catch-up and burst benchmarks measure how fast envelopes cross one
// link between two real nodes when there are many at once, against what
// the receiver's rate limit allows: a neighbour may push peerBurst
// envelopes at once and then peerRate a second (gossip/relay's defaults,
// which the daemon keeps), so n envelopes need at least
// (n-peerBurst)/peerRate seconds. "x-allowed" is the time taken over that
// allowance (the goal is at most 2), "in-2x-allowed" how many had arrived
// by then. A stall is a figure, not a failure: after the deadline they
// print what arrived and "x-allowed" is left out.
//
// Both run once per b.N iteration and take minutes when the link stalls:
// make bench runs them with -benchtime 1x.
const (
	peerRate  = 200  // relay.Options.PeerRate's default
	peerBurst = 2000 // relay.Options.PeerBurst's default

	catchUpN = 10_000
	// catchUpDeadline is a little over twice the allowance (2 x 40 s):
	// later than that misses the goal anyway.
	catchUpDeadline = 85 * time.Second
	burstN          = 5_000
	// burstDeadline outlasts the first anti-entropy round (a minute after
	// the link came up), which is what finishes a stalled burst today.
	burstDeadline = 70 * time.Second
	// fillers are the enqueue calls kept in flight by one client (the
	// node allows 16 per connection).
	fillers = 8
)

// allowance is the least time the rate limit lets n envelopes cross one
// link in.
func allowance(n int) time.Duration {
	return time.Duration(max(n-peerBurst, 0)) * time.Second / peerRate
}

// benchNodeConfig is a loopback node whose store (under dir) is large
// enough that no quota refuses the benchmarks' envelopes: a link or a
// client may fill an eighth of the message budget.
func benchNodeConfig(dir, name string) config.Config {
	cfg := daemontest.Config(dir, name)
	cfg.StoreMaxBytes = 256 << 20
	return cfg
}

// randomDMs makes n DM envelopes, each of a sealed 256-byte message's
// size, to random mailboxes with random receipt tags: relays cannot tell
// them from real ones, and no mailbox or mailbox quota fills.
func randomDMs(n int) []gossip.Envelope {
	envs := make([]gossip.Envelope, n)
	for i := range envs {
		dest, tag := make([]byte, 32), make([]byte, 32)
		payload := make([]byte, e2e.DMPayloadSize(msgBody))
		rand.Read(dest)
		rand.Read(tag)
		rand.Read(payload)
		e := gossip.Envelope{Kind: schemas.Envelope_Kind_dm, Destination: dest, ReceiptTag: tag,
			Payload: payload, TTLSeconds: 3600, HopLimit: 8}
		e.ID = gossip.ComputeID(e.Kind, e.Destination, e.ReceiptTag, e.Payload)
		envs[i] = e
	}
	return envs
}

// enqueueAll hands every envelope to the node n through one client,
// fillers calls at a time, and fails the benchmark on any refusal.
func enqueueAll(b *testing.B, n *daemontest.Node, envs []gossip.Envelope) {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c, err := client.Dial(ctx, n.D.Addr(), n.ID.Fingerprint())
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	next := make(chan gossip.Envelope)
	errs := make(chan error, fillers)
	var wg sync.WaitGroup
	for range fillers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for e := range next {
				if stored, err := c.Enqueue(ctx, e); err != nil || !stored {
					errs <- fmt.Errorf("enqueue: stored=%v: %w", stored, err)
					cancel()
					return
				}
			}
		}()
	}
feed:
	for _, e := range envs {
		select {
		case next <- e:
		case <-ctx.Done():
			break feed
		}
	}
	close(next)
	wg.Wait()
	select {
	case err := <-errs:
		b.Fatal(err)
	default:
	}
}

// dms is how many DMs d's store holds. It walks the store's ids (a few
// milliseconds at 10k): byte counts would be cheaper but are not exact,
// since a relayed copy's record need not be the size of the original.
func heldDMs(d *daemon.Daemon) int { return d.Status().Store.Kinds["dm"] }

// crossing waits until to holds all n DMs (it has no other source of
// them), at most until deadline. It returns how many it holds, when the
// last of them arrived, and how many it held at twice the allowance (the
// goal: all of them).
func crossing(to *daemon.Daemon, n int, start, deadline time.Time) (arrived int, took time.Duration, in2x int) {
	goal := start.Add(2 * allowance(n))
	lastAt, in2x := start, -1
	for {
		got := heldDMs(to)
		now := time.Now()
		if got != arrived {
			arrived, lastAt = got, now
		}
		if in2x < 0 && now.After(goal) {
			in2x = arrived
		}
		if arrived >= n || now.After(deadline) {
			if in2x < 0 {
				in2x = arrived
			}
			return arrived, lastAt.Sub(start), in2x
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// reportCrossing prints the figures of n envelopes sent at once.
func reportCrossing(b *testing.B, n, arrived int, took time.Duration, in2x int) {
	b.ReportMetric(float64(arrived), "arrived")
	b.ReportMetric(float64(in2x), "in-2x-allowed")
	b.ReportMetric(float64(arrived)/took.Seconds(), "env/s")
	b.ReportMetric(allowance(n).Seconds(), "allowed-s")
	if arrived < n {
		// The time to all of them is unknown: more than the deadline.
		b.Logf("%d of %d envelopes arrived, the last %.1f s after the start", arrived, n, took.Seconds())
		return
	}
	if allowance(n) > 0 {
		b.ReportMetric(took.Seconds()/allowance(n).Seconds(), "x-allowed")
	}
}

// BenchmarkCatchUp: a node holding 10,000 stored envelopes links to a
// fresh node; time until the fresh node holds them all (or the deadline).
// ns/op is that time.
func BenchmarkCatchUp(b *testing.B) {
	b.Run("qpq", func(b *testing.B) {
		for range b.N {
			b.StopTimer()
			dir := b.TempDir()
			holder := daemontest.Start(b, benchNodeConfig(dir, "holder"))
			enqueueAll(b, holder, randomDMs(catchUpN))
			cfg := benchNodeConfig(dir, "fresh")
			cfg.Peers = append(cfg.Peers, holder.PeerAddr())
			b.StartTimer()
			start := time.Now()
			fresh := daemontest.Start(b, cfg)
			arrived, took, in2x := crossing(fresh.D, catchUpN, start, start.Add(catchUpDeadline))
			b.StopTimer()
			reportCrossing(b, catchUpN, arrived, took, in2x)
			fresh.Stop()
			holder.Stop()
		}
	})
}

// BenchmarkBurst: a client hands 5,000 envelopes at once to a node linked
// to one neighbour; time until the neighbour holds them all (or the
// deadline). ns/op is that time.
func BenchmarkBurst(b *testing.B) {
	b.Run("qpq", func(b *testing.B) {
		for range b.N {
			b.StopTimer()
			dir := b.TempDir()
			ns := daemontest.Line(b, benchNodeConfig(dir, "to"), benchNodeConfig(dir, "from"))
			to, from := ns[0], ns[1]
			envs := randomDMs(burstN)
			b.StartTimer()
			start := time.Now()
			enqueueAll(b, from, envs)
			handed := time.Since(start)
			arrived, took, in2x := crossing(to.D, burstN, start, start.Add(burstDeadline))
			b.StopTimer()
			reportCrossing(b, burstN, arrived, took, in2x)
			b.ReportMetric(handed.Seconds(), "enqueue-s") // the client's part of the time
			to.Stop()
			from.Stop()
		}
	})
}
