package p2p_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/quicproquo/qpq/gossip"
	"github.com/quicproquo/qpq/mesh/identity"
	"github.com/quicproquo/qpq/mesh/testkit"
	"github.com/quicproquo/qpq/node/bridge/p2p"
	"github.com/quicproquo/qpq/node/client"
	"github.com/quicproquo/qpq/node/daemon/daemontest"
	"github.com/quicproquo/qpq/node/e2e"
	"github.com/quicproquo/qpq/node/e2e/e2etest"
	"github.com/quicproquo/qpq/schemas"
)

// These tests run real nodes (QUIC on 127.0.0.1, bbolt stores) and real
// libp2p hosts on 127.0.0.1: no public bootstrap peer, no DHT, nothing
// outside loopback.

const (
	secret   = "a test rendezvous secret"
	loopback = "/ip4/127.0.0.1/udp/0/quic-v1"
)

func testLog(t testing.TB) *slog.Logger {
	if os.Getenv("QPQ_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return nil
}

// island is a mesh island of two nodes: a plain node and a bridge that
// keeps a mesh link to it.
type island struct {
	name   string
	node   *daemontest.Node
	bridge *daemontest.Node
}

func newIsland(t *testing.T, name string, channels ...[32]byte) *island {
	t.Helper()
	dir := t.TempDir()
	bcfg := daemontest.Config(dir, "bridge")
	bcfg.Control = filepath.Join(dir, "bridge.sock") // for qpq status
	bcfg.Bridge.Island = name
	bcfg.Bridge.Channels = channels
	ns := daemontest.Line(t, daemontest.Config(dir, "node"), bcfg)
	return &island{name: name, node: ns[0], bridge: ns[1]}
}

// startBridge starts the libp2p side of n, accepting allow and dialling
// peers, listening on listen; it stops when the test ends.
func startBridge(t testing.TB, n *daemontest.Node, listen string, allow []identity.Fingerprint, peers ...string) *p2p.Bridge {
	t.Helper()
	cfg := n.Cfg
	cfg.Bridge.Secret = secret
	cfg.Bridge.Listen = []string{listen}
	cfg.Bridge.Allow = allow
	cfg.Bridge.Peers = peers
	b, err := p2p.New(n.D, n.ID, cfg, testLog(t))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		b.Run(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		b.Close()
		<-done
	})
	return b
}

var (
	qpqOnce sync.Once
	qpqPath string
	qpqErr  error
)

// qpqBinary builds the qpq command (the router build's CLI) once.
func qpqBinary(t testing.TB) string {
	t.Helper()
	qpqOnce.Do(func() {
		dir, err := os.MkdirTemp("", "qpq-bridge-test-")
		if err != nil {
			qpqErr = err
			return
		}
		qpqPath = filepath.Join(dir, "qpq")
		// Built in the router module (the repository root), as shipped.
		cmd := exec.Command("go", "build", "-o", qpqPath, "./node/cmd/qpq")
		cmd.Dir = filepath.Join("..", "..", "..")
		out, err := cmd.CombinedOutput()
		if err != nil {
			qpqErr = fmt.Errorf("build qpq: %v\n%s", err, out)
		}
	})
	if qpqErr != nil {
		t.Fatal(qpqErr)
	}
	return qpqPath
}

func TestMain(m *testing.M) {
	code := m.Run()
	if qpqPath != "" {
		os.RemoveAll(filepath.Dir(qpqPath))
	}
	os.Exit(code)
}

func fp(n *daemontest.Node) identity.Fingerprint { return n.ID.Fingerprint() }

func kinds(n *daemontest.Node) map[string]int { return n.D.Status().Store.Kinds }

func dial(t testing.TB, n *daemontest.Node) *client.Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, n.D.Addr(), fp(n))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func broadcast(t *testing.T, from *e2e.User, key e2e.ChannelKey, body string) gossip.Envelope {
	t.Helper()
	payload, err := e2e.SealChannel(from, key, []byte(body), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	id := key.ID()
	env := gossip.Envelope{Kind: schemas.Envelope_Kind_broadcast, Destination: id[:], TTLSeconds: 3600, HopLimit: 8, Payload: payload}
	env.ID = gossip.ComputeID(env.Kind, env.Destination, nil, env.Payload)
	return env
}

// Two islands of two nodes, joined by their bridges over libp2p: alice's
// DM at island nord reaches bob at island sued, and bob's receipt deletes
// every copy on both sides; a bridged channel's message crosses and an
// unbridged one's does not; nodes learn of the other island's nodes but
// never dial them.
func TestDMCrossesTwoIslandsAndItsReceiptDeletesTheCopies(t *testing.T) {
	testkit.LeakCheck(t)
	town := e2e.NewChannelKey()  // bridged: the town's bulletin board
	local := e2e.NewChannelKey() // not bridged: a street's chat
	nord := newIsland(t, "nord", town.ID())
	sued := newIsland(t, "sued", town.ID())
	bn := startBridge(t, nord.bridge, loopback, []identity.Fingerprint{fp(sued.bridge)})
	startBridge(t, sued.bridge, loopback, []identity.Fingerprint{fp(nord.bridge)}, bn.Addrs()[0])
	testkit.WaitFor(t, 30*time.Second, "the bridges to link", func() bool {
		return nord.bridge.D.Bridged(fp(sued.bridge)) && sued.bridge.D.Bridged(fp(nord.bridge))
	})

	alice, bob := e2e.NewUser(), e2e.NewUser()
	dm := e2etest.SealDM(t, alice, e2etest.BundleOf(t, bob), []byte("hello from nord"))
	ca := dial(t, nord.node)
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	if _, err := ca.Enqueue(ctx, dm); err != nil {
		t.Fatal(err)
	}

	// Bob, a client of sued's plain node, reads it and acknowledges it.
	cb := dial(t, sued.node)
	signed, _ := bob.SignedBundle(1, time.Hour)
	mb, err := cb.Authenticate(ctx, bob, signed)
	if err != nil {
		t.Fatal(err)
	}
	defer mb.Release()
	var body string
	for body == "" {
		envs, err := mb.Fetch(ctx, 0, 5*time.Second)
		if err != nil {
			t.Fatalf("bob's DM did not arrive across the bridge: %v", err)
		}
		for _, x := range envs {
			if x.ID != dm.ID {
				continue
			}
			m, err := e2e.OpenDM(bob, x.Payload)
			if err != nil {
				t.Fatal(err)
			}
			body = string(m.Body)
			if _, err := mb.Ack(ctx, [][]byte{m.ReceiptSecret[:]}); err != nil {
				t.Fatal(err)
			}
		}
	}
	if body != "hello from nord" {
		t.Fatalf("bob read %q", body)
	}
	all := []*daemontest.Node{nord.node, nord.bridge, sued.bridge, sued.node}
	testkit.WaitFor(t, 30*time.Second, "the receipt to delete the DM on every node of both islands", func() bool {
		for _, n := range all {
			if k := kinds(n); k["dm"] != 0 || k["receipt"] == 0 {
				return false
			}
		}
		return true
	})

	// The street's message goes first, then the town's: once the town's
	// is at sued, the street's would be there too had it crossed.
	street := broadcast(t, alice, local, "street chat")
	board := broadcast(t, alice, town, "town bulletin")
	for _, e := range []gossip.Envelope{street, board} {
		if _, err := ca.Enqueue(ctx, e); err != nil {
			t.Fatal(err)
		}
	}
	var got []gossip.Envelope
	for len(got) == 0 {
		if got, err = cb.ChannelFetch(ctx, [][32]byte{town.ID()}, nil, 16, 5*time.Second); err != nil {
			t.Fatalf("the bridged channel's message did not cross: %v", err)
		}
	}
	if m, err := e2e.OpenChannel(town, got[0].Payload); err != nil || string(m.Body) != "town bulletin" {
		t.Fatalf("bridged channel message: %q, %v", m.Body, err)
	}
	testkit.WaitFor(t, 10*time.Second, "the street's message at nord's bridge", func() bool { return kinds(nord.bridge)["broadcast"] == 2 })
	if n := kinds(sued.bridge)["broadcast"]; n != 1 {
		t.Fatalf("sued's bridge holds %d broadcasts, want only the bridged channel's", n)
	}
	if envs, _ := cb.ChannelFetch(ctx, [][32]byte{local.ID()}, nil, 16, 0); len(envs) != 0 {
		t.Fatal("the unbridged channel's message crossed to sued")
	}
	var held uint64
	for _, p := range nord.bridge.D.Status().Peers {
		if p.Via == "bridge" {
			held = p.Held
			if p.Island != "sued" {
				t.Fatalf("nord's bridge link says island %q", p.Island)
			}
		}
	}
	if held == 0 {
		t.Fatal("nord's bridge status counts nothing kept on its island")
	}
	// What the operator sees in qpq status.
	out, err := exec.Command(qpqBinary(t), "status", "--control", nord.bridge.Cfg.Control).CombinedOutput()
	if err != nil || !strings.Contains(string(out), fp(sued.bridge).String()) || !strings.Contains(string(out), "via: bridge to island sued") {
		t.Fatalf("qpq status on nord's bridge: %v\n%s", err, out)
	}

	// Descriptors crossed, marked: sued's node knows nord's nodes exist
	// but never dials them (their addresses are another island's), and
	// does not offer them to its clients for onion paths.
	testkit.WaitFor(t, 20*time.Second, "nord's descriptors at sued's node", func() bool { return kinds(sued.node)["descriptor"] >= 4 })
	descs, err := cb.Descriptors(ctx, 64)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range descs {
		if d.FP == fp(nord.node) || d.FP == fp(nord.bridge) {
			t.Fatalf("sued's node offers nord's node %s to its clients", d.FP.Short())
		}
	}
	if daemontest.Linked(sued.node.D, fp(nord.node)) || daemontest.Linked(nord.node.D, fp(sued.node)) {
		t.Fatal("a node linked to a node of the other island over its island address")
	}
}

// A bridge whose fingerprint is not in the allow list is refused: it
// never gets a link, and the refusing bridge counts it. A listed peer
// that is not allowed is a configuration error.
func TestBridgeNotInAllowListIsRefused(t *testing.T) {
	testkit.LeakCheck(t)
	nord := newIsland(t, "nord")
	sued := newIsland(t, "sued")
	bn := startBridge(t, nord.bridge, loopback, []identity.Fingerprint{{7}}) // someone else
	bs := startBridge(t, sued.bridge, loopback, []identity.Fingerprint{fp(nord.bridge)}, bn.Addrs()[0])
	testkit.WaitFor(t, 30*time.Second, "nord's bridge to refuse sued's", func() bool { return bn.Refused() > 0 })
	time.Sleep(2 * time.Second) // sued's bridge keeps trying meanwhile
	if nord.bridge.D.Bridged(fp(sued.bridge)) || sued.bridge.D.Bridged(fp(nord.bridge)) {
		t.Fatal("a bridge not in the allow list got a link")
	}
	_ = bs

	cfg := nord.bridge.Cfg
	cfg.Bridge.Secret, cfg.Bridge.Listen = secret, []string{loopback}
	cfg.Bridge.Allow = []identity.Fingerprint{{7}}
	cfg.Bridge.Peers = []string{bs.Addrs()[0]}
	if _, err := p2p.New(nord.bridge.D, nord.bridge.ID, cfg, nil); err == nil || !strings.Contains(err.Error(), "not in --bridge-allow") {
		t.Fatalf("a listed peer outside the allow list: %v", err)
	}
}

// A bridge that goes away (restarts) is dialled again by the bridge that
// lists it, and DMs cross once more.
func TestBridgeThatGoesAwayIsRedialled(t *testing.T) {
	testkit.LeakCheck(t)
	nord := newIsland(t, "nord")
	sued := newIsland(t, "sued")
	bs := startBridge(t, sued.bridge, loopback, []identity.Fingerprint{fp(nord.bridge)})
	addr := bs.Addrs()[0]
	startBridge(t, nord.bridge, loopback, []identity.Fingerprint{fp(sued.bridge)}, addr)
	testkit.WaitFor(t, 30*time.Second, "the bridges to link", func() bool { return nord.bridge.D.Bridged(fp(sued.bridge)) })

	// sued's bridge goes away: its host and its node.
	bs.Close()
	sued.bridge.Stop()
	testkit.WaitFor(t, 30*time.Second, "nord's bridge to see the link end", func() bool { return !nord.bridge.D.Bridged(fp(sued.bridge)) })

	// It comes back on the same address, listing no one: nord's redials.
	sued.bridge.Start()
	listen := strings.Split(addr, "/p2p/")[0]
	startBridge(t, sued.bridge, listen, []identity.Fingerprint{fp(nord.bridge)})
	testkit.WaitFor(t, 60*time.Second, "nord's bridge to dial sued's again", func() bool {
		return nord.bridge.D.Bridged(fp(sued.bridge)) && sued.bridge.D.Bridged(fp(nord.bridge))
	})

	alice, bob := e2e.NewUser(), e2e.NewUser()
	dm := e2etest.SealDM(t, alice, e2etest.BundleOf(t, bob), []byte("after the restart"))
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	if _, err := dial(t, nord.bridge).Enqueue(ctx, dm); err != nil {
		t.Fatal(err)
	}
	testkit.WaitFor(t, 30*time.Second, "the DM at sued's node", func() bool { return kinds(sued.node)["dm"] == 1 })
}

// The rendezvous protocol depends on the domain and the secret, and shows
// neither.
func TestProtocolNamesTheRendezvousWithoutShowingIt(t *testing.T) {
	a, b, c := p2p.Protocol("qpq", secret), p2p.Protocol("qpq", secret+"x"), p2p.Protocol("ffm", secret)
	if a == b || a == c || !strings.HasPrefix(string(a), "/qpq/bridge/1/") {
		t.Fatalf("protocols %s %s %s", a, b, c)
	}
	if strings.Contains(string(a), "test") {
		t.Fatalf("protocol %s shows the secret", a)
	}
	id, _ := identity.NewNode()
	pid, err := p2p.PeerID(id)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := p2p.Fingerprint(pid); err != nil || got != id.Fingerprint() {
		t.Fatalf("fingerprint of the peer id: %v %v", got, err)
	}
}

// A bridge link brings in at most its rate: a burst from the other
// island is told to wait and arrives in full, later.
func TestBridgeLinkIsRateLimited(t *testing.T) {
	testkit.LeakCheck(t)
	nord := newIsland(t, "nord")
	sued := newIsland(t, "sued")
	sued.bridge.Stop()
	sued.bridge.Cfg.Bridge.Rate = 2 // envelopes a second, 4 at once
	sued.bridge.Start()
	bs := startBridge(t, sued.bridge, loopback, []identity.Fingerprint{fp(nord.bridge)})
	startBridge(t, nord.bridge, loopback, []identity.Fingerprint{fp(sued.bridge)}, bs.Addrs()[0])
	testkit.WaitFor(t, 30*time.Second, "the bridges to link", func() bool { return sued.bridge.D.Bridged(fp(nord.bridge)) })
	// Let the descriptors' first crossing drain the bucket's burst first.
	time.Sleep(3 * time.Second)

	bob := e2e.NewUser()
	c := dial(t, nord.node)
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	const burst = 12
	for i := range burst {
		dm := e2etest.SealDM(t, e2e.NewUser(), e2etest.BundleOf(t, bob), fmt.Appendf(nil, "dm %d", i))
		if _, err := c.Enqueue(ctx, dm); err != nil {
			t.Fatal(err)
		}
	}
	testkit.WaitFor(t, 40*time.Second, "every DM of the burst at sued's node", func() bool { return kinds(sued.node)["dm"] == burst })
	var slowed uint64
	for _, p := range sued.bridge.D.Status().Peers {
		if p.Via == "bridge" {
			slowed = p.Slowed
		}
	}
	if slowed == 0 {
		t.Fatal("a burst of 12 over a link limited to 2 a second was never told to wait")
	}
}

// Listed bridges are the rendezvous: two bridges that each list only a
// third learn each other's address from it and link directly, once their
// allow lists accept each other.
func TestBridgesMeetThroughAListedBridge(t *testing.T) {
	testkit.LeakCheck(t)
	hub, east, west := newIsland(t, "hub"), newIsland(t, "east"), newIsland(t, "west")
	all := []identity.Fingerprint{fp(hub.bridge), fp(east.bridge), fp(west.bridge)}
	bh := startBridge(t, hub.bridge, loopback, all)
	startBridge(t, east.bridge, loopback, all, bh.Addrs()[0])
	testkit.WaitFor(t, 30*time.Second, "east to link to the hub", func() bool { return hub.bridge.D.Bridged(fp(east.bridge)) })
	startBridge(t, west.bridge, loopback, all, bh.Addrs()[0])
	testkit.WaitFor(t, 30*time.Second, "west and east to link directly", func() bool {
		return west.bridge.D.Bridged(fp(east.bridge)) && east.bridge.D.Bridged(fp(west.bridge))
	})
}
