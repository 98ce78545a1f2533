package daemon_test

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"maps"
	"math"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/quicproquo/qpq/gossip/gossiptest"
	"github.com/quicproquo/qpq/mesh/cell"
	"github.com/quicproquo/qpq/mesh/testkit"
	"github.com/quicproquo/qpq/node/daemon/daemontest"
	"github.com/quicproquo/qpq/node/e2e"
	"github.com/quicproquo/qpq/node/route"
)

// lockedBuffer is tshark's stderr, read while tshark writes it.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// captured is one UDP datagram tshark saw: when, and its payload's size.
type captured struct {
	at   float64
	size int
}

// capture runs tshark on loopback with filter while fn runs, and returns
// what it saw. The filter names the test's own ports only.
func capture(t *testing.T, filter string, fn func()) []captured {
	t.Helper()
	tshark, err := exec.LookPath("tshark")
	if err != nil {
		t.Fatal("tshark is needed (Debian package tshark; .ci/deps installs it)")
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cmd := exec.CommandContext(ctx, tshark, "-i", "lo", "-l", "-n", "-f", filter, "-T", "fields", "-e", "frame.time_epoch", "-e", "udp.length")
	var out bytes.Buffer
	errb := &lockedBuffer{}
	cmd.Stdout, cmd.Stderr = &out, errb
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// tshark says "Capturing on" once the filter is set.
	testkit.WaitFor(t, 20*time.Second, "tshark to start capturing", func() bool {
		return strings.Contains(errb.String(), "Capturing on")
	})
	fn()
	time.Sleep(500 * time.Millisecond) // let the last packets be printed
	cmd.Process.Signal(os.Interrupt)   // tshark flushes what it captured
	cmd.Wait()
	var got []captured
	sc := bufio.NewScanner(&out)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) != 2 {
			continue
		}
		at, err1 := strconv.ParseFloat(f[0], 64)
		n, err2 := strconv.Atoi(f[1])
		if err1 == nil && err2 == nil {
			got = append(got, captured{at, n - 8})
		}
	}
	return got
}

func portOf(t *testing.T, addr string) string {
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// cellPair is two linked nodes a and b whose a has a client, and the
// filter that captures what a sends b.
type cellPair struct {
	ns     []*daemontest.Node
	at     *user
	filter string
	b      route.Relay
}

func newCellPair(t *testing.T, ctx context.Context, rate float64) *cellPair {
	t.Helper()
	dir := t.TempDir()
	a, b := daemontest.Config(dir, "a"), daemontest.Config(dir, "b")
	a.DecoyRate, b.DecoyRate = rate, rate
	ns := daemontest.Line(t, a, b)
	p := &cellPair{ns: ns, at: userAt(t, ctx, ns[0], e2e.NewUser()),
		filter: fmt.Sprintf("udp and src port %s and dst port %s", portOf(t, ns[0].D.Addr()), portOf(t, ns[1].D.Addr()))}
	// Everything the link-up moves (descriptors, the client's bundle)
	// has crossed before a capture starts.
	testkit.WaitFor(t, 20*time.Second, "both nodes to know both descriptors and b the client's bundle", func() bool {
		sa, sb := ns[0].D.Status(), ns[1].D.Status()
		return sa.Onion.Relays == 2 && sb.Onion.Relays == 2 && sb.Store.Kinds["bundle"] == 1
	})
	time.Sleep(time.Second) // and the calls' answers
	p.b = relaysAt(t, ctx, p.at)[ns[1].ID.Fingerprint()]
	return p
}

// sendOnions hands a's node n onion packets for b at random times over
// d: real packets, which b peels and, as their exit, refuses (they
// carry a broadcast), so that nothing but cells crosses the link.
func (p *cellPair) sendOnions(t *testing.T, ctx context.Context, n int, d time.Duration, rnd *rand.Rand) {
	t.Helper()
	start := time.Now()
	at := make([]time.Duration, n)
	for i := range at {
		at[i] = time.Duration(rnd.Int64N(int64(d)))
	}
	slices.Sort(at)
	for _, w := range at {
		time.Sleep(time.Until(start.Add(w)))
		pkts, err := route.Packets(gossiptest.Broadcast(nil, 600), []route.Relay{p.b}, nil)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := p.at.c.SendOnion(ctx, p.b.FP, pkts[0], nil, 0); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(time.Until(start.Add(d)))
}

// sizes counts the captured datagrams by size.
func sizes(got []captured) map[int]int {
	h := map[int]int{}
	for _, c := range got {
		h[c.size]++
	}
	return h
}

// ackOnly is the most a datagram without a cell or call carries here (an
// ACK frame, a keep-alive): it moves no message.
const ackOnly = 64

// poissonFit is the Kolmogorov-Smirnov distance between the gaps of the
// cell datagrams and the exponential distribution of mean 1/rate, and
// the rate seen.
func poissonFit(cells []float64, rate float64) (d, seen float64) {
	var gaps []float64
	for i := 1; i < len(cells); i++ {
		gaps = append(gaps, cells[i]-cells[i-1])
	}
	slices.Sort(gaps)
	n := float64(len(gaps))
	for i, g := range gaps {
		f := 1 - math.Exp(-rate*g)
		d = max(d, math.Abs(f-float64(i)/n), math.Abs(f-float64(i+1)/n))
	}
	return d, n / (cells[len(cells)-1] - cells[0])
}

// With decoys on, what a link shows is the same with and without real
// onion traffic (at most the decoy rate): every datagram a sends b is a
// cell of one size, an ACK, or a probe the link sends either way, the
// sizes seen are the same set in both captures, and the cells' times fit
// the configured Poisson clock in both (Kolmogorov-Smirnov, fixed seed,
// a generous bound). b drops the cover cells unread: its store gains
// nothing and it sends nothing on.
func TestDecoysHideWhenOnionPacketsMove(t *testing.T) {
	testkit.LeakCheck(t)
	t.Setenv("QUIC_GO_DISABLE_GSO", "1")
	t.Setenv("QPQ_TEST_DECOY_SEED", "7")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	const rate, span = 20.0, 12 * time.Second // a probe each way in each span
	p := newCellPair(t, ctx, rate)
	b := p.ns[1]
	before := b.D.Status()

	quiet := capture(t, p.filter, func() { time.Sleep(span) })
	busy := capture(t, p.filter, func() { p.sendOnions(t, ctx, 12, span, rand.New(rand.NewPCG(1, 2))) })

	checkCaptures(t, quiet, busy, rate, "with onion packets")
	after := b.D.Status()
	if after.Onion.Peeled-before.Onion.Peeled != 12 {
		t.Errorf("b peeled %d packets, want the 12 sent", after.Onion.Peeled-before.Onion.Peeled)
	}
	if after.Cells.ReceivedCover == 0 || after.Cells.SentReal != before.Cells.SentReal {
		t.Errorf("b's cells: %+v", after.Cells)
	}
	if !maps.Equal(after.Store.Kinds, before.Store.Kinds) {
		t.Errorf("b's store went from %v to %v: cover or refused packets were stored", before.Store.Kinds, after.Store.Kinds)
	}
}

// checkCaptures compares a capture of decoys only with one of decoys
// plus real traffic (named busyName): every datagram is a cell of one
// size, an ACK, or one of a few probes the link sends either way; the
// sizes are the same set; the cell counts are alike; and the cells'
// times fit the configured Poisson clock in both.
func checkCaptures(t *testing.T, quiet, busy []captured, rate float64, busyName string) {
	t.Helper()
	qs, bs := sizes(quiet), sizes(busy)
	cellSize := 0
	for n, c := range qs {
		if c > qs[cellSize] {
			cellSize = n
		}
	}
	t.Logf("decoys only: %d datagrams, sizes %v; %s: %d datagrams, sizes %v", len(quiet), qs, busyName, len(busy), bs)
	// A cell's datagram may carry a small ACK beside it (quic-go adds one
	// when one is due and fits), cover or real alike; the link's own
	// probes (a call and its answer each way every 10 s) go either way.
	isCell := func(n int) bool { return n >= cellSize && n <= cellSize+ackOnly }
	for name, h := range map[string]map[int]int{"decoys only": qs, busyName: bs} {
		other, coalesced := 0, 0
		for n, c := range h {
			switch {
			case n == cellSize:
			case isCell(n):
				coalesced += c
			case n > ackOnly:
				other += c
			}
		}
		for n := range h {
			if n > cellSize+ackOnly {
				t.Errorf("%s: %d datagrams of %d bytes, more than a cell (a call not in cells): %v", name, h[n], n, h)
			}
		}
		if other > 6 {
			t.Errorf("%s: %d datagrams that are neither cells, ACKs nor probes: %v", name, other, h)
		}
		if coalesced*20 > h[cellSize] {
			t.Errorf("%s: %d of %d cell datagrams with something beside the cell", name, coalesced, h[cellSize])
		}
	}
	if len(bs) > 0 && qs[cellSize]*2 < bs[cellSize] || bs[cellSize]*2 < qs[cellSize] {
		t.Errorf("cell datagrams: %d with decoys only, %d %s", qs[cellSize], bs[cellSize], busyName)
	}
	for name, got := range map[string][]captured{"decoys only": quiet, busyName: busy} {
		var at []float64
		for _, c := range got {
			if c.size >= cellSize && c.size <= cellSize+ackOnly {
				at = append(at, c.at)
			}
		}
		d, seen := poissonFit(at, rate)
		bound := 2.5 / math.Sqrt(float64(len(at)))
		t.Logf("%s: %d cells, %.1f a second, KS distance %.3f (bound %.3f)", name, len(at), seen, d, bound)
		if d > bound || seen < rate*0.6 || seen > rate*1.4 {
			t.Errorf("%s: cell times do not fit a Poisson clock of %g a second: KS %.3f over %.3f, rate %.1f", name, rate, d, bound, seen)
		}
	}
}

// With decoys off a link sends no cover: a capture shows exactly the
// real packets' cells.
func TestNoDecoysNoCover(t *testing.T) {
	testkit.LeakCheck(t)
	t.Setenv("QUIC_GO_DISABLE_GSO", "1")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	p := newCellPair(t, ctx, 0)
	got := capture(t, p.filter, func() { p.sendOnions(t, ctx, 3, 2*time.Second, rand.New(rand.NewPCG(3, 4))) })
	cells := 0
	for _, c := range got {
		// A cell's datagram: the cell, QUIC's framing, perhaps an ACK.
		if c.size >= cell.Size && c.size <= cell.Size+100 {
			cells++
		}
	}
	if cells != 12 {
		t.Errorf("%d cell-sized datagrams, want the 3 packets' 12 (sizes %v)", cells, sizes(got))
	}
	if st := p.ns[0].D.Status().Cells; st.SentCover != 0 || st.SentReal != 12 {
		t.Errorf("a's cells: %+v", st)
	}
	testkit.WaitFor(t, 10*time.Second, "b to peel the 3 packets", func() bool { return p.ns[1].D.Status().Onion.Peeled == 3 })
}

// A node of protocol version 4 (this build with QPQ_TEST_PROTOCOL_VERSION
// standing in for the previous release) has no cells: onion packets to
// it go by RPC as before, and it still peels them.
func TestOnionToAnOlderNodeGoesByRPC(t *testing.T) {
	testkit.LeakCheck(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	dir := t.TempDir()
	a := daemontest.Start(t, daemontest.Config(dir, "a"))
	os.Setenv("QPQ_TEST_PROTOCOL_VERSION", "4")
	cb := daemontest.Config(dir, "b")
	cb.Peers = append(cb.Peers, a.PeerAddr())
	b := daemontest.Start(t, cb)
	os.Unsetenv("QPQ_TEST_PROTOCOL_VERSION")
	testkit.WaitFor(t, 20*time.Second, "a and b to link", func() bool {
		return daemontest.Linked(a.D, b.ID.Fingerprint()) && daemontest.Linked(b.D, a.ID.Fingerprint())
	})
	testkit.WaitFor(t, 20*time.Second, "a to know b as an onion relay", func() bool { return a.D.Status().Onion.Relays == 2 })
	p := &cellPair{ns: []*daemontest.Node{a, b}, at: userAt(t, ctx, a, e2e.NewUser())}
	p.b = relaysAt(t, ctx, p.at)[b.ID.Fingerprint()]
	p.sendOnions(t, ctx, 3, time.Second, rand.New(rand.NewPCG(5, 6)))
	testkit.WaitFor(t, 10*time.Second, "b to peel the 3 packets", func() bool { return b.D.Status().Onion.Peeled == 3 })
	if st := a.D.Status().Cells; st.Links != 0 || st.SentReal != 0 {
		t.Errorf("a sent cells to a version 4 node: %+v", st)
	}
	if f := a.D.Status().Onion.Forwarded; f != 3 {
		t.Errorf("a forwarded %d packets, want 3 by RPC", f)
	}
}
