package daemon_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/quicproquo/qpq/gossip"
	"github.com/quicproquo/qpq/mesh/descriptor"
	"github.com/quicproquo/qpq/mesh/identity"
	"github.com/quicproquo/qpq/mesh/testkit"
	"github.com/quicproquo/qpq/node/config"
	"github.com/quicproquo/qpq/node/control"
	"github.com/quicproquo/qpq/node/daemon/daemontest"
	"github.com/quicproquo/qpq/node/e2e"
	"github.com/quicproquo/qpq/node/e2e/e2etest"
	"github.com/quicproquo/qpq/node/route"
)

// onionLine starts a line of n nodes, each with a data dir (its onion keys
// are kept there) and one link of its own choosing at most (the line
// stays a line: no exchange shortcuts, no link churn), so that relays
// that are not neighbours are reached by dialling; it waits until every
// node knows every node as an onion relay.
func onionLine(t *testing.T, n int) []*daemontest.Node { return onionLineWith(t, n, nil) }

// onionLineWith is onionLine with edit, if not nil, changing node i's
// configuration before it starts.
func onionLineWith(t *testing.T, n int, edit func(i int, c *config.Config)) []*daemontest.Node {
	t.Helper()
	dir := t.TempDir()
	var cfgs []config.Config
	for i := range n {
		name := string(rune('a' + i))
		c := daemontest.Config(dir, name)
		c.DataDir = filepath.Join(dir, name)
		if err := os.Mkdir(c.DataDir, 0o700); err != nil {
			t.Fatal(err)
		}
		c.MaxLinks = 1
		if edit != nil {
			edit(i, &c)
		}
		cfgs = append(cfgs, c)
	}
	ns := daemontest.Line(t, cfgs...)
	// Link-up catch-up brings each new neighbour up to date at once; 30 s
	// leaves room for a summary that came before the other side registered
	// the link (retried after 1, 2, 4, 8 s), well short of the next
	// anti-entropy round (60 s), which would hide a lost catch-up.
	if !pollUntil(30*time.Second, func() bool {
		for _, x := range ns {
			if x.D.Status().Onion.Relays < n {
				return false
			}
		}
		return true
	}) {
		for i, x := range ns {
			st := x.D.Status()
			var peers []string
			for _, p := range st.Peers {
				peers = append(peers, p.Fingerprint[:6]+"/"+p.Via)
			}
			t.Logf("node %c %s: %d relays, store %v, links %v", 'a'+i, st.Fingerprint[:6], st.Onion.Relays, st.Store.Kinds, peers)
		}
		t.Fatal("timed out after 30s waiting for every node's descriptor to reach every node")
	}
	return ns
}

// relaysAt is the relays the client at entry learns from it, by node.
func relaysAt(t *testing.T, ctx context.Context, u *user) map[identity.Fingerprint]route.Relay {
	t.Helper()
	descs, err := u.c.Descriptors(ctx, 64)
	if err != nil {
		t.Fatal(err)
	}
	c := route.NewCache()
	c.Add(descs, time.Now())
	out := map[identity.Fingerprint]route.Relay{}
	for _, r := range c.Relays() {
		out[r.FP] = r
	}
	return out
}

// sendByOnion seals a DM from u to bob and hands its packets to u's node
// for the route through the nodes via.
func sendByOnion(t *testing.T, ctx context.Context, u *user, to identity.Fingerprint, via ...*daemontest.Node) gossip.Envelope {
	t.Helper()
	b := bundleAt(t, ctx, u, to)
	known := relaysAt(t, ctx, u)
	var rt []route.Relay
	for _, n := range via {
		r, ok := known[n.ID.Fingerprint()]
		if !ok {
			t.Fatalf("the entry node gave no descriptor of relay %s", n.ID.Fingerprint().Short())
		}
		rt = append(rt, r)
	}
	env := e2etest.SealDM(t, u.u, b, []byte("by onion"))
	pkts, err := route.Packets(env, rt, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range pkts {
		if _, err := u.c.SendOnion(ctx, rt[0].FP, p, nil, 0); err != nil {
			t.Fatal(err)
		}
	}
	return env
}

func onionStats(n *daemontest.Node) control.Onion { return n.D.Status().Onion }

// A DM sent by a 3-relay onion from one end of a 7-node line reaches the
// user at the other end once: each relay peels exactly one layer (the
// ones that are not neighbours reached by dialling), the exit injects
// it, no other node peels anything, and the receipt deletes every copy.
func TestOnionDMCrossesThreeRelays(t *testing.T) {
	testkit.LeakCheck(t)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	ns := onionLine(t, 7)
	bob := e2e.NewUser()
	atG := userAt(t, ctx, ns[6], bob)
	atA := userAt(t, ctx, ns[0], e2e.NewUser())
	relays := []*daemontest.Node{ns[3], ns[1], ns[5]}
	env := sendByOnion(t, ctx, atA, bob.Fingerprint(), relays...)
	sent := map[gossip.ID]bool{env.ID: true}
	readAll(t, ctx, atG, sent)
	testkit.WaitFor(t, 10*time.Second, "the relays' counters", func() bool {
		return onionStats(ns[5]).Exited == 1
	})
	for i, n := range ns {
		s := onionStats(n)
		want := int64(0)
		for _, r := range relays {
			if r == n {
				want = 1
			}
		}
		if s.Peeled != want {
			t.Errorf("node %c peeled %d layers, want %d", 'a'+i, s.Peeled, want)
		}
		if s.MACFailures+s.Replays+s.UnknownEpoch+s.Dropped != 0 {
			t.Errorf("node %c refused or dropped packets: %+v", 'a'+i, s)
		}
	}
	if s := onionStats(ns[0]); s.Entered != 1 || s.Forwarded != 1 {
		t.Errorf("entry: %+v, want 1 packet entered and forwarded", s)
	}
	testkit.WaitFor(t, 30*time.Second, "the receipt to delete every copy", func() bool {
		return len(holders(ns, sent)) == 0
	})
}

// A replayed packet is refused at the relay, also after the relay
// restarted; a packet for an exit that is down waits in store and
// forward, with no node holding the DM inside, until the exit is back
// (same keys, same store); then the DM arrives once.
func TestOnionReplayAndStoreAndForward(t *testing.T) {
	testkit.LeakCheck(t)
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	ns := onionLine(t, 5)
	bob := e2e.NewUser()
	atE := userAt(t, ctx, ns[4], bob)
	atA := userAt(t, ctx, ns[0], e2e.NewUser())

	// The exit, c, is down when the packet comes: b keeps it as an onion
	// envelope for c.
	exit := ns[2]
	known := relaysAt(t, ctx, atA)
	b := bundleAt(t, ctx, atA, bob.Fingerprint())
	env := e2etest.SealDM(t, atA.u, b, []byte("wait for the exit"))
	pkts, err := route.Packets(env, []route.Relay{known[ns[3].ID.Fingerprint()], known[ns[1].ID.Fingerprint()], known[exit.ID.Fingerprint()]}, nil)
	if err != nil || len(pkts) != 1 {
		t.Fatalf("%d packets, %v", len(pkts), err)
	}
	exit.Stop()
	if _, err := atA.c.SendOnion(ctx, ns[3].ID.Fingerprint(), pkts[0], nil, 0); err != nil {
		t.Fatal(err)
	}
	testkit.WaitFor(t, 40*time.Second, "b to send the packet on by store and forward", func() bool {
		return onionStats(ns[1]).Stored == 1
	})
	for i, n := range ns {
		if n == exit {
			continue
		}
		if k := n.D.Status().Store.Kinds["dm"]; k != 0 {
			t.Fatalf("node %c holds %d DMs before the exit injected one", 'a'+i, k)
		}
		// The store file itself: neither the DM's id nor a piece of its
		// sealed payload, while bob's bundle key (which every node holds)
		// shows the scan reads what the store holds.
		raw, err := os.ReadFile(n.Cfg.Store)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Contains(raw, b.KEMKey[:64]) {
			t.Fatalf("node %c: bob's bundle is not in its store file; the scan sees nothing", 'a'+i)
		}
		if bytes.Contains(raw, env.ID[:]) || bytes.Contains(raw, env.Payload[100:164]) {
			t.Errorf("node %c's store file holds the DM's id or payload before the exit injected it", 'a'+i)
		}
	}
	// The same packet again, at d (the first relay), before and after d
	// restarts: refused as a replay.
	if _, err := atA.c.SendOnion(ctx, ns[3].ID.Fingerprint(), pkts[0], nil, 0); err != nil {
		t.Fatal(err)
	}
	testkit.WaitFor(t, 10*time.Second, "d to refuse the replay", func() bool { return onionStats(ns[3]).Replays == 1 })
	ns[3].Stop()
	ns[3].Start()
	testkit.WaitFor(t, 20*time.Second, "d to link again", func() bool {
		return daemontest.Linked(ns[3].D, ns[4].ID.Fingerprint()) || daemontest.Linked(ns[3].D, ns[2].ID.Fingerprint())
	})
	if _, err := atA.c.SendOnion(ctx, ns[3].ID.Fingerprint(), pkts[0], nil, 0); err != nil {
		t.Fatal(err)
	}
	testkit.WaitFor(t, 10*time.Second, "d, restarted, to refuse the replay", func() bool { return onionStats(ns[3]).Replays == 1 })
	if s := onionStats(ns[3]); s.Peeled != 0 || s.UnknownEpoch != 0 {
		t.Fatalf("restarted d: %+v, want the replay refused under its kept key", s)
	}

	// The exit comes back: the onion envelope reaches it, it peels and
	// injects, and bob reads the DM once.
	exit.Start()
	readAll(t, ctx, atE, map[gossip.ID]bool{env.ID: true})
	if s := onionStats(exit); s.Peeled != 1 || s.Exited != 1 {
		t.Fatalf("the exit after its restart: %+v", s)
	}
}

// A client sends through its entry node with route.Sender: the first
// route (the three relays it has known longest, one of which is down)
// brings no reply from its exit in time, so the client tries a route of
// three other relays, whose exit injects the DM and replies; the reply
// travels back to the entry node, which hands it to the waiting call.
// The DM arrives once.
func TestOnionSenderFailsOverToAnotherRoute(t *testing.T) {
	testkit.LeakCheck(t)
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	ns := onionLine(t, 7)
	bob := e2e.NewUser()
	atG := userAt(t, ctx, ns[6], bob)
	atA := userAt(t, ctx, ns[0], e2e.NewUser())
	b := bundleAt(t, ctx, atA, bob.Fingerprint())
	descs, err := atA.c.Descriptors(ctx, 64)
	if err != nil {
		t.Fatal(err)
	}
	down := ns[1]
	first := map[identity.Fingerprint]bool{down.ID.Fingerprint(): true, ns[3].ID.Fingerprint(): true, ns[5].ID.Fingerprint(): true}
	cache := route.NewCache()
	t0 := time.Now()
	for _, d := range descs {
		seen := t0
		if !first[d.FP] && d.FP != ns[0].ID.Fingerprint() {
			seen = t0.Add(time.Hour) // known later: not in the first pick's pool
		}
		cache.Add([]descriptor.Descriptor{d}, seen)
	}
	down.Stop()
	s := &route.Sender{Cache: cache, Entry: ns[0].ID.Fingerprint(), Wait: 5 * time.Second}
	env := e2etest.SealDM(t, atA.u, b, []byte("by another route"))
	res, err := s.Send(ctx, atA.c, env)
	if err != nil {
		t.Fatalf("send: %v (%+v)", err, res)
	}
	if !res.Acked || res.Attempts != 2 {
		t.Fatalf("result %+v, want acked on the second route", res)
	}
	for _, fp := range res.Route {
		if first[fp] {
			t.Fatalf("the second route %v reuses a relay of the first", res.Route)
		}
	}
	readAll(t, ctx, atG, map[gossip.ID]bool{env.ID: true})
	if s := onionStats(ns[0]); s.Delivered != 1 {
		t.Fatalf("entry: %+v, want the one reply delivered", s)
	}
}
