package daemon_test

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"math/big"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/quicproquo/qpq/gossip"
	"github.com/quicproquo/qpq/gossip/gossiptest"
	"github.com/quicproquo/qpq/mesh/identity"
	"github.com/quicproquo/qpq/mesh/link"
	"github.com/quicproquo/qpq/mesh/testkit"
	"github.com/quicproquo/qpq/node/daemon"
	"github.com/quicproquo/qpq/node/daemon/daemontest"
)

const waitDialled = 20 * time.Second

func startNode(t *testing.T, name string) *daemontest.Node {
	t.Helper()
	return daemontest.Start(t, daemontest.Config(t.TempDir(), name))
}

func dms(n int) []gossip.Envelope {
	var out []gossip.Envelope
	for range n {
		out = append(out, gossiptest.DM(nil, nil, 3600, 1))
	}
	return out
}

func storedDMs(n *daemontest.Node) int { return n.D.Status().Store.Kinds["dm"] }

func neighbourFPs(n *daemontest.Node) []string {
	var fps []string
	for _, p := range n.D.Status().Peers {
		fps = append(fps, p.Fingerprint)
	}
	return fps
}

func pushTo(t *testing.T, from, to *daemontest.Node, envs []gossip.Envelope) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitDialled)
	defer cancel()
	n, err := from.D.PushTo(ctx, to.ID.Fingerprint(), []string{to.D.Addr()}, envs)
	if err != nil {
		t.Fatalf("PushTo %s: %v", to.ID.Fingerprint().Short(), err)
	}
	return n.Accepted
}

// A node pushes DMs straight to a node it has no link to; that node (a
// neighbour of a third) stores them, and the dialled link shows as a
// neighbour on neither side nor changes either side's neighbour count.
// A second push reuses the same link.
func TestPushToNodeNotANeighbour(t *testing.T) {
	testkit.LeakCheck(t)
	line := daemontest.Line(t, daemontest.Config(t.TempDir(), "b"), daemontest.Config(t.TempDir(), "c"))
	b, c := line[0], line[1]
	a := startNode(t, "a")

	if got := pushTo(t, a, c, dms(3)); got != 3 {
		t.Fatalf("PushTo answered %d accepted, want 3", got)
	}
	if got := storedDMs(c); got != 3 {
		t.Fatalf("c stores %d DMs, want 3", got)
	}
	if s := a.D.Status().Dialled; s.Out != 1 {
		t.Fatalf("a's status shows %+v dialled links, want 1 out", s)
	}
	testkit.WaitFor(t, waitDialled, "c to count the inbound dialled link", func() bool { return c.D.Dialled().In == 1 })
	if fps := neighbourFPs(a); len(fps) != 0 {
		t.Fatalf("a lists neighbours %v, want none", fps)
	}
	if fps := neighbourFPs(c); len(fps) != 1 || fps[0] != b.ID.Fingerprint().String() {
		t.Fatalf("c lists neighbours %v, want only b %s", fps, b.ID.Fingerprint())
	}

	if got := pushTo(t, a, c, dms(2)); got != 2 {
		t.Fatalf("second PushTo answered %d accepted, want 2", got)
	}
	if got := storedDMs(c); got != 5 {
		t.Fatalf("c stores %d DMs, want 5", got)
	}
	if s, in := a.D.Dialled(), c.D.Dialled().In; s.Out != 1 || in != 1 {
		t.Fatalf("after a second push: a holds %+v, c %d inbound; want the one link reused", s, in)
	}
	if fps := neighbourFPs(c); len(fps) != 1 {
		t.Fatalf("c lists neighbours %v after the second push, want only b", fps)
	}
}

// A push to a neighbour goes over the neighbour link: nothing is dialled.
func TestPushToNeighbourUsesItsLink(t *testing.T) {
	line := daemontest.Line(t, daemontest.Config(t.TempDir(), "a"), daemontest.Config(t.TempDir(), "b"))
	a, b := line[0], line[1]
	if got := pushTo(t, a, b, dms(1)); got != 1 {
		t.Fatalf("PushTo answered %d accepted, want 1", got)
	}
	if s := a.D.Dialled(); s != (daemon.DialledStats{}) {
		t.Fatalf("a holds dialled links %+v pushing to its neighbour, want none", s)
	}
	if in := b.D.Dialled().In; in != 0 {
		t.Fatalf("b holds %d inbound dialled links, want none", in)
	}
}

// With a bound of 2, pushing to 3 nodes holds 2 links: the least
// recently used is closed for the third, on both sides.
func TestDialledPoolBound(t *testing.T) {
	testkit.LeakCheck(t)
	a := startNode(t, "a")
	a.D.SetDialled(daemon.DialledOptions{Max: 2})
	ts := []*daemontest.Node{startNode(t, "t1"), startNode(t, "t2"), startNode(t, "t3")}
	for i, tn := range ts {
		if got := pushTo(t, a, tn, dms(1)); got != 1 {
			t.Fatalf("push to t%d answered %d accepted, want 1", i+1, got)
		}
		if s := a.D.Dialled(); s.Out+s.Dialling > 2 {
			t.Fatalf("after pushing to t%d a holds %+v dialled links, bound 2", i+1, s)
		}
	}
	if s := a.D.Dialled(); s.Out != 2 {
		t.Fatalf("a holds %+v dialled links, want 2", s)
	}
	testkit.WaitFor(t, waitDialled, "t1's link (least recently used) to close on its side", func() bool { return ts[0].D.Dialled().In == 0 })
	for i, tn := range ts[1:] {
		if in := tn.D.Dialled().In; in != 1 {
			t.Fatalf("t%d holds %d inbound dialled links, want 1", i+2, in)
		}
	}
	for i, tn := range ts {
		if got := storedDMs(tn); got != 1 {
			t.Fatalf("t%d stores %d DMs, want 1", i+1, got)
		}
	}
}

// blackHole is a UDP address that never answers, so a dial to it lasts
// until its deadline.
func blackHole(t *testing.T) string {
	t.Helper()
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c.LocalAddr().String()
}

// With every slot held by a dial in progress, another target is refused
// at once; the dial ends at its deadline, and the failed target is then
// refused without being dialled again.
func TestDialledFullAndFailedNotRetried(t *testing.T) {
	testkit.LeakCheck(t)
	a := startNode(t, "a")
	c := startNode(t, "c")
	a.D.SetDialled(daemon.DialledOptions{Max: 1, DialTimeout: 500 * time.Millisecond})
	hole := blackHole(t)
	ghost, err := identity.NewNode()
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := a.D.PushTo(context.Background(), ghost.Fingerprint(), []string{hole}, dms(1))
		done <- err
	}()
	testkit.WaitFor(t, waitDialled, "the dial to the black hole to start", func() bool { return a.D.Dialled().Dialling == 1 })
	_, err = a.D.PushTo(context.Background(), c.ID.Fingerprint(), []string{c.D.Addr()}, dms(1))
	if !errors.Is(err, daemon.ErrDialledFull) {
		t.Fatalf("push while the only slot dials: %v, want ErrDialledFull", err)
	}
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("push to a black hole succeeded")
		}
	case <-time.After(waitDialled):
		t.Fatal("the dial to the black hole outlived its deadline")
	}
	if s := a.D.Dialled(); s != (daemon.DialledStats{}) {
		t.Fatalf("after the failed dial a holds %+v, want nothing", s)
	}
	_, err = a.D.PushTo(context.Background(), ghost.Fingerprint(), []string{hole}, dms(1))
	if !errors.Is(err, daemon.ErrDialFailed) {
		t.Fatalf("second push to the failed target: %v, want ErrDialFailed", err)
	}
	if s := a.D.Dialled(); s.Dialling != 0 {
		t.Fatalf("the failed target is being dialled again: %+v", s)
	}
	// The slot is free again for a reachable node.
	if got := pushTo(t, a, c, dms(1)); got != 1 {
		t.Fatalf("push to c answered %d accepted, want 1", got)
	}
}

// A dialled link unused for the idle time is closed on both sides.
func TestDialledIdleClose(t *testing.T) {
	testkit.LeakCheck(t)
	a := startNode(t, "a")
	c := startNode(t, "c")
	a.D.SetDialled(daemon.DialledOptions{Idle: 200 * time.Millisecond})
	if got := pushTo(t, a, c, dms(1)); got != 1 {
		t.Fatalf("PushTo answered %d accepted, want 1", got)
	}
	testkit.WaitFor(t, waitDialled, "the idle dialled link to close at a", func() bool { return a.D.Dialled().Out == 0 })
	testkit.WaitFor(t, waitDialled, "the idle dialled link to close at c", func() bool { return c.D.Dialled().In == 0 })
	// The next push dials again.
	if got := pushTo(t, a, c, dms(1)); got != 1 {
		t.Fatalf("PushTo after idle close answered %d accepted, want 1", got)
	}
	if got := storedDMs(c); got != 2 {
		t.Fatalf("c stores %d DMs, want 2", got)
	}
}

// Closing a node with dialled links open both ways and a dial in
// progress returns, ends the links on the other side and leaves no
// goroutine behind.
func TestDialledCloseStopsEverything(t *testing.T) {
	testkit.LeakCheck(t)
	a := startNode(t, "a")
	b := startNode(t, "b")
	c := startNode(t, "c")
	pushTo(t, a, c, dms(1))
	pushTo(t, b, a, dms(1))
	testkit.WaitFor(t, waitDialled, "a to hold b's dialled link", func() bool { return a.D.Dialled().In == 1 })
	ghost, err := identity.NewNode()
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := a.D.PushTo(context.Background(), ghost.Fingerprint(), []string{blackHole(t)}, dms(1))
		done <- err
	}()
	testkit.WaitFor(t, waitDialled, "the dial to the black hole to start", func() bool { return a.D.Dialled().Dialling == 1 })
	a.Stop()
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("a push whose dial was cut by Close succeeded")
		}
	case <-time.After(waitDialled):
		t.Fatal("PushTo did not return after Close")
	}
	testkit.WaitFor(t, waitDialled, "c to see a's dialled link end", func() bool { return c.D.Dialled().In == 0 })
	testkit.WaitFor(t, waitDialled, "b to see its dialled link to a end", func() bool { return b.D.Dialled().Out == 0 })
}

// Pushes over an inbound dialled link spend the receiver's bucket for
// it: past the burst, a push is answered with none taken and when to
// retry, and nothing of it is stored.
func TestDialledInboundRateLimit(t *testing.T) {
	a := startNode(t, "a")
	c := startNode(t, "c")
	c.D.SetDialled(daemon.DialledOptions{InRate: 1e-6, InBurst: 4})
	if got := pushTo(t, a, c, dms(4)); got != 4 {
		t.Fatalf("push within the burst answered %d accepted, want 4", got)
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitDialled)
	defer cancel()
	res, err := a.D.PushTo(ctx, c.ID.Fingerprint(), []string{c.D.Addr()}, dms(2))
	if err != nil || res.Taken != 0 || res.RetryAfter <= 0 {
		// Both speak flow control: the answer says none was taken and
		// when to come back, instead of an error.
		t.Fatalf("push past the burst: %+v, %v; want none taken and a time to retry", res, err)
	}
	if got := storedDMs(c); got != 4 {
		t.Fatalf("c stores %d DMs, want 4", got)
	}
}

// oldNode is a node of the release before link.ALPNDial: it answers only
// link.ALPNPeer. It counts the handshakes it sees.
func oldNode(t *testing.T) (addr string, fp identity.Fingerprint, hellos *atomic.Int32) {
	t.Helper()
	id, err := identity.NewNode()
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "old"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, id.Public(), id.Key)
	if err != nil {
		t.Fatal(err)
	}
	cert := tls.Certificate{Certificate: [][]byte{der}, PrivateKey: id.Key}
	hellos = new(atomic.Int32)
	peer := &tls.Config{MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{cert},
		NextProtos: []string{link.ALPNPeer}, ClientAuth: tls.RequireAnyClientCert}
	conf := &tls.Config{MinVersion: tls.VersionTLS13, GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
		hellos.Add(1)
		return peer, nil
	}}
	ln, err := quic.ListenAddr("127.0.0.1:0", conf, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln.Addr().String(), id.Fingerprint(), hellos
}

// An older node refuses a dialled link in its TLS handshake (it offers
// no such protocol): PushTo fails, and the target is not dialled again
// before RetryAfter.
func TestDialledOldNodeRefuses(t *testing.T) {
	a := startNode(t, "a")
	addr, fp, hellos := oldNode(t)
	ctx, cancel := context.WithTimeout(context.Background(), waitDialled)
	defer cancel()
	if _, err := a.D.PushTo(ctx, fp, []string{addr}, dms(1)); err == nil {
		t.Fatal("an old node accepted a dialled link")
	} else if errors.Is(err, daemon.ErrDialFailed) {
		t.Fatalf("first push to the old node: %v, want the handshake's refusal", err)
	}
	if n := hellos.Load(); n != 1 {
		t.Fatalf("the old node saw %d handshakes, want 1", n)
	}
	for range 3 {
		if _, err := a.D.PushTo(ctx, fp, []string{addr}, dms(1)); !errors.Is(err, daemon.ErrDialFailed) {
			t.Fatalf("push again to the old node: %v, want ErrDialFailed", err)
		}
	}
	if n := hellos.Load(); n != 1 {
		t.Fatalf("the old node saw %d handshakes after the refusal, want 1 (no redial)", n)
	}
}

// BenchmarkPushToDialled measures one DM pushed to a node that is not a
// neighbour: over an open dialled link ("reused"), and with a dial and
// hello first ("fresh": a bound of 1 and two targets pushed to in turn,
// so each push evicts the other's link).
func BenchmarkPushToDialled(b *testing.B) {
	push := func(b *testing.B, a, to *daemontest.Node) {
		ctx, cancel := context.WithTimeout(context.Background(), waitDialled)
		defer cancel()
		if _, err := a.D.PushTo(ctx, to.ID.Fingerprint(), []string{to.D.Addr()}, dms(1)); err != nil {
			b.Fatal(err)
		}
	}
	b.Run("reused", func(b *testing.B) {
		a := daemontest.Start(b, daemontest.Config(b.TempDir(), "a"))
		c := daemontest.Start(b, daemontest.Config(b.TempDir(), "c"))
		push(b, a, c)
		b.ResetTimer()
		start := time.Now()
		for range b.N {
			push(b, a, c)
		}
		b.ReportMetric(float64(time.Since(start).Microseconds())/float64(b.N), "µs/push")
	})
	b.Run("fresh", func(b *testing.B) {
		a := daemontest.Start(b, daemontest.Config(b.TempDir(), "a"))
		a.D.SetDialled(daemon.DialledOptions{Max: 1})
		ts := []*daemontest.Node{
			daemontest.Start(b, daemontest.Config(b.TempDir(), "t1")),
			daemontest.Start(b, daemontest.Config(b.TempDir(), "t2")),
		}
		b.ResetTimer()
		start := time.Now()
		for i := range b.N {
			push(b, a, ts[i%2])
		}
		b.ReportMetric(float64(time.Since(start).Microseconds())/float64(b.N), "µs/push")
	})
}
