package daemon_test

import (
	"context"
	"fmt"
	"io"
	"os"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/quicproquo/qpq/gossip"
	"github.com/quicproquo/qpq/mesh/descriptor"
	"github.com/quicproquo/qpq/mesh/identity"
	"github.com/quicproquo/qpq/mesh/link"
	"github.com/quicproquo/qpq/node/client"
	"github.com/quicproquo/qpq/node/config"
	"github.com/quicproquo/qpq/node/daemon"
	"github.com/quicproquo/qpq/node/e2e"
	"github.com/quicproquo/qpq/node/route"

	"github.com/quicproquo/qpq/node/e2e/e2etest"

	"github.com/quicproquo/qpq/node/daemon/daemontest"

	"github.com/quicproquo/qpq/mesh/testkit"
)

// The line benchmarks carry padded 256-byte messages through four nodes on
// loopback (three hops). "qpq" is the whole path: a client enqueues a
// sealed DM at A, it is stored and pushed hop by hop, and a client waiting
// at D fetches it. "bare" is three quic-go stream relays copying the same
// bytes A->B->C->D in this process: the floor the mesh is compared to.
// "qpq" keeps its stores in the test's temporary directory (make bench
// sets TMPDIR=/dev/shm: tmpfs), "qpq-disk" in QPQ_BENCH_DISK, a directory
// on a disk filesystem (make bench picks one); without it, it is skipped.
// The throughput variants also print the store commits per relayed DM:
// what the relays B and C committed, receipts included, divided by the
// messages and by the two relays: each relay's cost of one DM (issue 12
// counts three today: store it, store its receipt, delete it).

const msgBody = 256

type lineRig struct {
	ds     []*daemon.Daemon
	ids    []*identity.Node
	alice  *e2e.User
	bob    *e2e.User
	to     e2e.Bundle
	atA    *client.Client
	mbAtD  *client.Mailbox
	cancel context.CancelFunc
}

// diskEnv names the directory on disk the "qpq-disk" variants keep
// their stores in.
const diskEnv = "QPQ_BENCH_DISK"

// diskDir is a new directory under $QPQ_BENCH_DISK, removed when the
// benchmark ends; it skips the benchmark when that is unset.
func diskDir(b *testing.B) string {
	root := os.Getenv(diskEnv)
	if root == "" {
		b.Skipf("%s is not set: no directory on disk for the stores (make bench sets it)", diskEnv)
	}
	dir, err := os.MkdirTemp(root, "linebench-")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// newLine starts the four nodes with their stores in dir.
func newLine(b *testing.B, dir string) *lineRig { return newLineOf(b, dir, 4, false) }

// newLineOf starts a line of n nodes, bob's client at the last and
// alice's at the first (the same node when n is 1). With oneDomain the
// nodes share a mesh domain, so each learns the others' descriptors (onion
// relays), and link caps (1 at the ends, 2 between) keep the line.
func newLineOf(b *testing.B, dir string, n int, oneDomain bool) *lineRig {
	return newLineWith(b, dir, n, oneDomain, nil)
}

// newLineWith is newLineOf with edit, if not nil, changing each node's
// configuration.
func newLineWith(b *testing.B, dir string, n int, oneDomain bool, edit func(*config.Config)) *lineRig {
	r := &lineRig{alice: e2e.NewUser(), bob: e2e.NewUser()}
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	b.Cleanup(cancel)
	cfgs := make([]config.Config, n)
	for i := range cfgs {
		name := fmt.Sprintf("%c%d", 'a'+i, n)
		cfgs[i] = daemontest.Config(dir, name)
		cfgs[i].StoreMaxBytes = 256 << 20
		// A domain of its own: a node ignores the descriptors of other
		// domains, so peer exchange does not link A, B, C and D all to
		// each other and the line stays three hops long.
		cfgs[i].Domain = "line-" + name
		if oneDomain {
			cfgs[i].Domain = "line"
			cfgs[i].MaxLinks = 2
			if i == 0 || i == n-1 {
				cfgs[i].MaxLinks = 1
			}
		}
		if edit != nil {
			edit(&cfgs[i])
		}
	}
	for _, n := range daemontest.Line(b, cfgs...) {
		r.ds, r.ids = append(r.ds, n.D), append(r.ids, n.ID)
	}
	b.Cleanup(func() { r.checkLine(b) })
	var err error
	cd, err := client.Dial(ctx, r.ds[n-1].Addr(), r.ids[n-1].Fingerprint())
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { cd.Close() })
	signed, _ := r.bob.SignedBundle(1, time.Hour)
	if r.mbAtD, err = cd.Authenticate(ctx, r.bob, signed); err != nil {
		b.Fatal(err)
	}
	if r.atA, err = client.Dial(ctx, r.ds[0].Addr(), r.ids[0].Fingerprint()); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { r.atA.Close() })
	testkit.WaitFor(b, 20*time.Second, "bob's bundle to reach A", func() bool {
		r.to, err = r.atA.LookupBundle(ctx, r.bob.Fingerprint())
		return err == nil
	})
	return r
}

// checkLine fails the benchmark when a node holds a link the line does
// not have: its figures would be those of shorter paths.
func (r *lineRig) checkLine(b *testing.B) {
	for i, d := range r.ds {
		want := 2
		if i == 0 || i == len(r.ds)-1 {
			want = 1
		}
		if len(r.ds) == 1 {
			want = 0
		}
		if got := len(d.Status().Peers); got > want {
			b.Errorf("node %c holds %d links, not the line's %d: the figures are not a line's", 'A'+i, got, want)
		}
	}
}

// relayCommits is the store commits of the relays B and C so far.
func (r *lineRig) relayCommits() int64 {
	return r.ds[1].StoreStats().Commits + r.ds[2].StoreStats().Commits
}

// settled reports whether no node holds a message any more: every DM
// was fetched at D and its receipt deleted every copy on the way back,
// so the relays have made all the commits the DMs cost them.
func (r *lineRig) settled() bool {
	for _, d := range r.ds {
		if d.StoreStats().MessageBytes != 0 {
			return false
		}
	}
	return true
}

// pollUntil polls cond until it holds or within has passed, and says
// whether it held. Benchmarks use it where a stall is a figure to print,
// not a failure.
func pollUntil(within time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
	return true
}

func (r *lineRig) seal(b *testing.B) gossip.Envelope {
	return e2etest.SealDM(b, r.alice, r.to, make([]byte, msgBody))
}

// drain fetches at D until n messages arrived, acknowledging them so the
// mailbox stays small.
func (r *lineRig) drain(b *testing.B, n int) {
	ctx := context.Background()
	for got := 0; got < n; {
		envs, err := r.mbAtD.Fetch(ctx, 256, 10*time.Second)
		if err != nil {
			b.Fatal(err)
		}
		if len(envs) == 0 {
			b.Fatalf("only %d of %d messages reached D", got, n)
		}
		var secrets [][]byte
		for _, e := range envs {
			m, err := e2e.OpenDM(r.bob, e.Payload)
			if err != nil {
				b.Fatal(err)
			}
			secrets = append(secrets, m.ReceiptSecret[:])
		}
		if _, err := r.mbAtD.Ack(ctx, secrets); err != nil {
			b.Fatal(err)
		}
		got += len(envs)
	}
}

// bareChain is three stream relays: a writer at A, copies at B and C, a
// reader at D.
func bareChain(b *testing.B) (w io.Writer, rd io.Reader) { return bareChainOf(b, 3) }

// bareChainOf is a writer and a reader with relays stream relays between
// them (none: one stream from the writer to the reader).
func bareChainOf(b *testing.B, relays int) (w io.Writer, rd io.Reader) {
	ctx := b.Context()
	id, _ := identity.NewNode()
	var prev io.Writer
	var first io.Writer
	var trs []*link.Transport
	listen := func() *link.Transport {
		t, err := link.Listen("127.0.0.1:0", id)
		if err != nil {
			b.Fatal(err)
		}
		trs = append(trs, t)
		return t
	}
	b.Cleanup(func() {
		for _, t := range trs {
			t.Close()
		}
	})
	open := func(from, to *link.Transport) *quic.Stream {
		c, err := from.Dial(ctx, to.Addr().String(), id.Fingerprint(), link.ALPNClient)
		if err != nil {
			b.Fatal(err)
		}
		s, err := c.OpenStreamSync(ctx)
		if err != nil {
			b.Fatal(err)
		}
		s.Write([]byte{0}) // makes the stream visible to the acceptor
		return s
	}
	accept := func(t *link.Transport) *quic.Stream {
		c, err := t.Accept(ctx)
		if err != nil {
			b.Fatal(err)
		}
		s, err := c.AcceptStream(ctx)
		if err != nil {
			b.Fatal(err)
		}
		one := make([]byte, 1)
		io.ReadFull(s, one)
		return s
	}
	var nodes []*link.Transport
	for range relays + 2 {
		nodes = append(nodes, listen())
	}
	for i := 0; i <= relays; i++ {
		acc := make(chan *quic.Stream, 1)
		go func() { acc <- accept(nodes[i+1]) }()
		out := open(nodes[i], nodes[i+1])
		in := <-acc
		if i == 0 {
			first = out
		} else {
			go io.Copy(out, prev.(*quic.Stream))
		}
		prev = in
	}
	return first, prev.(*quic.Stream)
}

func BenchmarkLineLatency(b *testing.B) {
	b.Run("bare", func(b *testing.B) {
		w, rd := bareChain(b)
		buf := make([]byte, e2e.DMPayloadSize(msgBody))
		for b.Loop() {
			w.Write(buf)
			if _, err := io.ReadFull(rd, buf); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N)/3, "us/hop")
	})
	b.Run("qpq", func(b *testing.B) { lineLatency(b, b.TempDir()) })
	b.Run("qpq-disk", func(b *testing.B) { lineLatency(b, diskDir(b)) })
}

// lineLatency sends one message A->D at a time.
func lineLatency(b *testing.B, dir string) {
	r := newLine(b, dir)
	for b.Loop() {
		b.StopTimer()
		e := r.seal(b)
		b.StartTimer()
		if _, err := r.atA.Enqueue(context.Background(), e); err != nil {
			b.Fatal(err)
		}
		r.drain(b, 1)
	}
	b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N)/3, "us/hop")
}

// BenchmarkHopLatency is what one hop adds to a message's trip: the time
// through the 4-node line minus the time through one node (alice's and
// bob's clients at the same node), over the three hops, the two trips
// taken in turn. The endpoints' work (enqueue, the fetch's wake-up,
// opening the DM, the ack) is in both and cancels out, which
// LineLatency's figure, the whole trip over three, leaves in. bare does
// the same with three stream relays and with one direct stream.
func BenchmarkHopLatency(b *testing.B) {
	b.Run("bare", func(b *testing.B) {
		w3, r3 := bareChainOf(b, 3)
		w0, r0 := bareChainOf(b, 0)
		buf := make([]byte, e2e.DMPayloadSize(msgBody))
		var t0, t3 time.Duration
		trip := func(w io.Writer, rd io.Reader, sum *time.Duration) {
			start := time.Now()
			w.Write(buf)
			if _, err := io.ReadFull(rd, buf); err != nil {
				b.Fatal(err)
			}
			*sum += time.Since(start)
		}
		for b.Loop() {
			trip(w0, r0, &t0)
			trip(w3, r3, &t3)
		}
		reportHop(b, t3-t0)
	})
	b.Run("qpq", func(b *testing.B) { hopLatency(b, b.TempDir()) })
	b.Run("qpq-disk", func(b *testing.B) { hopLatency(b, diskDir(b)) })
}

// reportHop prints the extra time of b.N trips over three more hops as
// the cost of one hop.
func reportHop(b *testing.B, extra time.Duration) {
	b.ReportMetric(float64(extra.Nanoseconds())/1000/float64(b.N)/3, "us/hop")
}

func hopLatency(b *testing.B, dir string) {
	one, line := newLineOf(b, dir, 1, false), newLineOf(b, dir, 4, false)
	var t1, t4 time.Duration
	trip := func(r *lineRig, sum *time.Duration) {
		b.StopTimer()
		e := r.seal(b)
		b.StartTimer()
		start := time.Now()
		if _, err := r.atA.Enqueue(context.Background(), e); err != nil {
			b.Fatal(err)
		}
		r.drain(b, 1)
		*sum += time.Since(start)
	}
	for b.Loop() {
		trip(one, &t1)
		trip(line, &t4)
	}
	reportHop(b, t4-t1)
}

func BenchmarkLineThroughput(b *testing.B) {
	b.Run("bare", func(b *testing.B) {
		w, rd := bareChain(b)
		size := e2e.DMPayloadSize(msgBody)
		done := make(chan error, 1)
		go func() {
			buf := make([]byte, size)
			for range b.N {
				if _, err := io.ReadFull(rd, buf); err != nil {
					done <- err
					return
				}
			}
			done <- nil
		}()
		buf := make([]byte, size)
		b.ResetTimer()
		for range b.N {
			w.Write(buf)
		}
		if err := <-done; err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msg/s")
	})
	b.Run("qpq", func(b *testing.B) { lineThroughput(b, b.TempDir()) })
	b.Run("qpq-disk", func(b *testing.B) { lineThroughput(b, diskDir(b)) })
}

// settleWithin bounds the wait for the last receipts to travel back
// after the throughput run, before the relays' commits are read.
const settleWithin = 30 * time.Second

// lineThroughput enqueues b.N messages at A as fast as A takes them while
// D fetches them, then waits (untimed) until the receipts have deleted
// every copy and reports the relays' commits per message.
func lineThroughput(b *testing.B, dir string) {
	b.ReportAllocs()
	r := newLine(b, dir)
	envs := make([]gossip.Envelope, b.N)
	for i := range envs {
		envs[i] = r.seal(b)
	}
	commits := r.relayCommits()
	b.ResetTimer()
	for _, e := range envs {
		if _, err := r.atA.Enqueue(context.Background(), e); err != nil {
			b.Fatal(err)
		}
	}
	r.drain(b, b.N)
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msg/s")
	if !pollUntil(settleWithin, r.settled) {
		b.Logf("copies of DMs still held %v after the run: commits/DM counts the receipts that arrived", settleWithin)
	}
	b.ReportMetric(float64(r.relayCommits()-commits)/float64(2*b.N), "commits/DM")
}

// BenchmarkOnionLatency is one DM's trip from a client at A to bob's
// client at D on the 4-node line, handed to A directly ("direct", the
// anchor) and by a 3-relay onion route B, C, D with D the exit ("onion"):
// what the onion layers, the relays' replay records and the exit's
// reassembly add, measured in the same run on the same line.
func BenchmarkOnionLatency(b *testing.B) {
	r := newLineOf(b, b.TempDir(), 4, true)
	ctx := context.Background()
	b.Run("direct", func(b *testing.B) {
		for b.Loop() {
			b.StopTimer()
			e := r.seal(b)
			b.StartTimer()
			if _, err := r.atA.Enqueue(ctx, e); err != nil {
				b.Fatal(err)
			}
			r.drain(b, 1)
		}
		b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N)/3, "us/hop")
	})
	b.Run("onion", func(b *testing.B) { onionTrips(b, r) })
	// The same with every relay holding each packet for 5 ms on average
	// (mix-delay): its us/hop less the onion one is what mixing adds.
	mixed := newLineWith(b, b.TempDir(), 4, true, func(c *config.Config) { c.MixDelay = 5 * time.Millisecond })
	b.Run("onion-mix5ms", func(b *testing.B) { onionTrips(b, mixed) })
}

// onionTrips sends DMs from A to bob at D by a route of B, C and D, one
// at a time, and reports the time per hop.
func onionTrips(b *testing.B, r *lineRig) {
	ctx := context.Background()
	var descs []descriptor.Descriptor
	testkit.WaitFor(b, 20*time.Second, "A to know the relays B, C and D", func() bool {
		var err error
		descs, err = r.atA.Descriptors(ctx, 64)
		return err == nil && len(descs) >= 4
	})
	cache := route.NewCache()
	cache.Add(descs, time.Now())
	byFP := map[identity.Fingerprint]route.Relay{}
	for _, x := range cache.Relays() {
		byFP[x.FP] = x
	}
	var rt []route.Relay
	for _, id := range r.ids[1:] {
		x, ok := byFP[id.Fingerprint()]
		if !ok {
			b.Fatalf("no descriptor of relay %s at A", id.Fingerprint().Short())
		}
		rt = append(rt, x)
	}
	for b.Loop() {
		b.StopTimer()
		pkts, err := route.Packets(r.seal(b), rt, nil)
		if err != nil || len(pkts) != 1 {
			b.Fatalf("%d packets, %v", len(pkts), err)
		}
		b.StartTimer()
		if _, err := r.atA.SendOnion(ctx, rt[0].FP, pkts[0], nil, 0); err != nil {
			b.Fatal(err)
		}
		r.drain(b, 1)
	}
	b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N)/3, "us/hop")
}
