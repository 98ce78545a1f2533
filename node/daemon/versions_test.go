package daemon_test

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/quicproquo/qpq/gossip"
	"github.com/quicproquo/qpq/node/client"
	"github.com/quicproquo/qpq/node/config"
	"github.com/quicproquo/qpq/node/e2e"
	"github.com/quicproquo/qpq/node/route"

	"github.com/quicproquo/qpq/node/daemon/daemontest"
	"github.com/quicproquo/qpq/node/e2e/e2etest"

	"github.com/quicproquo/qpq/mesh/testkit"
)

// Routers upgrade one at a time: a line whose middle node speaks only
// protocol version 1 (this build with QPQ_TEST_PROTOCOL_VERSION=1 stands
// in for the previous release's wire) still carries a DM from one end to
// a user at the other, exactly once, and each side reports the version its
// links agreed on.
func TestLineThroughAnOlderNodeDeliversExactlyOnce(t *testing.T) {
	testkit.LeakCheck(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	dir := t.TempDir()
	cfgs := []config.Config{daemontest.Config(dir, "a"), daemontest.Config(dir, "b"), daemontest.Config(dir, "c")}
	// Each node its own domain: the line stays a line (no peer exchange
	// shortcut from a to c around the old node).
	for i := range cfgs {
		cfgs[i].Domain = "line" + string(rune('a'+i))
	}
	a := daemontest.Start(t, cfgs[0])
	os.Setenv("QPQ_TEST_PROTOCOL_VERSION", "1")
	cfgs[1].Peers = append(cfgs[1].Peers, a.PeerAddr())
	b := daemontest.Start(t, cfgs[1])
	os.Unsetenv("QPQ_TEST_PROTOCOL_VERSION")
	cfgs[2].Peers = append(cfgs[2].Peers, b.PeerAddr())
	c := daemontest.Start(t, cfgs[2])
	for _, pair := range [][2]*daemontest.Node{{a, b}, {b, c}} {
		x, y := pair[0], pair[1]
		testkit.WaitFor(t, 20*time.Second, "the line to link", func() bool {
			return daemontest.Linked(x.D, y.ID.Fingerprint()) && daemontest.Linked(y.D, x.ID.Fingerprint())
		})
	}
	for _, n := range []*daemontest.Node{a, c} {
		for _, p := range n.D.Status().Peers {
			if p.Protocol != 1 {
				t.Errorf("%s's link to %s agreed on protocol %d, want 1 (the old node's)", n.ID.Fingerprint().Short(), p.Fingerprint[:8], p.Protocol)
			}
		}
	}
	if daemontest.Linked(a.D, c.ID.Fingerprint()) {
		t.Fatal("a and c linked directly: the old node is not on the path")
	}

	alice, bob := e2e.NewUser(), e2e.NewUser()
	atC, err := client.Dial(ctx, c.D.Addr(), c.ID.Fingerprint())
	if err != nil {
		t.Fatal(err)
	}
	defer atC.Close()
	signed, _ := bob.SignedBundle(1, time.Hour)
	mb, err := atC.Authenticate(ctx, bob, signed)
	if err != nil {
		t.Fatal(err)
	}
	atA, err := client.Dial(ctx, a.D.Addr(), a.ID.Fingerprint())
	if err != nil {
		t.Fatal(err)
	}
	defer atA.Close()
	var to e2e.Bundle
	testkit.WaitFor(t, 20*time.Second, "bob's bundle to reach a through the old node", func() bool {
		to, err = atA.LookupBundle(ctx, bob.Fingerprint())
		return err == nil
	})
	const n = 20
	sent := map[[32]byte]bool{}
	for i := range n {
		env := e2etest.SealDM(t, alice, to, []byte{byte(i)})
		sent[env.ID] = true
		if stored, err := atA.Enqueue(ctx, env); err != nil || !stored {
			t.Fatalf("enqueue %d: %v %v", i, stored, err)
		}
	}
	got := map[[32]byte]int{}
	for len(got) < n {
		envs, err := mb.Fetch(ctx, 64, 10*time.Second)
		if err != nil {
			t.Fatalf("fetch after %d of %d: %v", len(got), n, err)
		}
		if len(envs) == 0 {
			t.Fatalf("only %d of %d DMs reached c through the old node", len(got), n)
		}
		var secrets [][]byte
		for _, e := range envs {
			if !sent[e.ID] {
				t.Fatalf("fetched an envelope never sent: %v", e.ID)
			}
			got[e.ID]++
			m, err := e2e.OpenDM(bob, e.Payload)
			if err != nil {
				t.Fatal(err)
			}
			secrets = append(secrets, m.ReceiptSecret[:])
		}
		if _, err := mb.Ack(ctx, secrets); err != nil {
			t.Fatal(err)
		}
	}
	for id, k := range got {
		if k != 1 {
			t.Errorf("DM %x fetched %d times, want once", id[:4], k)
		}
	}
}

// Placement needs protocol 3: between a node of this release and one that
// speaks 2 (this build with QPQ_TEST_PROTOCOL_VERSION=2 stands in for
// the release before placement), neither places on nor pulls from the
// other. DMs each way flood instead, at once, and arrive exactly once.
func TestPlacementSkipsAnOlderNode(t *testing.T) {
	testkit.LeakCheck(t)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	dir := t.TempDir()
	cfg := func(name string) config.Config {
		c := daemontest.Config(dir, name)
		c.Placement, c.PlacementMinAge, c.PlacementPull, c.PlacementFallback = 1, 0, 200*time.Millisecond, time.Hour
		return c
	}
	newer := daemontest.Start(t, cfg("new"))
	os.Setenv("QPQ_TEST_PROTOCOL_VERSION", "2")
	oc := cfg("old")
	oc.Peers = append(oc.Peers, newer.PeerAddr())
	older := daemontest.Start(t, oc)
	os.Unsetenv("QPQ_TEST_PROTOCOL_VERSION")
	testkit.WaitFor(t, 20*time.Second, "the two nodes to link", func() bool {
		return daemontest.Linked(newer.D, older.ID.Fingerprint()) && daemontest.Linked(older.D, newer.ID.Fingerprint())
	})
	for _, p := range newer.D.Status().Peers {
		if p.Protocol != 2 {
			t.Fatalf("the link agreed on protocol %d, want 2 (the older node's)", p.Protocol)
		}
	}
	for _, n := range []*daemontest.Node{newer, older} {
		testkit.WaitFor(t, 30*time.Second, "both descriptors to reach both nodes", func() bool {
			return n.D.Status().Placement.Nodes >= 2
		})
	}
	// A recipient at each node whose one mailbox node, by the other
	// node's view, is the recipient's own node: the only candidate that
	// is not the sender's node, and the one that cannot take it.
	recipient := func(from, at *daemontest.Node) *e2e.User {
		for {
			u := e2e.NewUser()
			if got := from.D.MailboxNodes(u.Fingerprint()); len(got) == 1 && got[0] == at.ID.Fingerprint() {
				return u
			}
		}
	}
	for _, dir := range []struct {
		name     string
		from, to *daemontest.Node
	}{{"new to old", newer, older}, {"old to new", older, newer}} {
		bob := recipient(dir.from, dir.to)
		atTo := userAt(t, ctx, dir.to, bob)
		atFrom := userAt(t, ctx, dir.from, e2e.NewUser())
		before := dir.from.D.Status().Placement
		sent := sendDMs(t, ctx, atFrom, bob.Fingerprint(), 3)
		readAll(t, ctx, atTo, sent)
		s := dir.from.D.Status().Placement
		if s.Placed != before.Placed || s.Flooded != before.Flooded+3 {
			t.Errorf("%s: sender's placement went from %+v to %+v, want 3 more flooded at once and none placed", dir.name, before, s)
		}
		if b := dir.to.D.Status().Placement.Boxed; b != 0 {
			t.Errorf("%s: the recipient's node holds %d placed DMs, want none", dir.name, b)
		}
	}
}

// Onion relaying needs protocol 4: a node that speaks 3 (this build with
// QPQ_TEST_PROTOCOL_VERSION=3 stands in for the release before onion
// routes) does not say in its descriptor that it relays, so clients never
// pick it; a DM by onion around it still arrives.
func TestOnionNeverPicksAnOlderNode(t *testing.T) {
	testkit.LeakCheck(t)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	dir := t.TempDir()
	var ns []*daemontest.Node
	for i := range 5 {
		c := daemontest.Config(dir, string(rune('a'+i)))
		c.MaxLinks = 2
		if i > 0 {
			c.Peers = append(c.Peers, ns[i-1].PeerAddr())
		}
		if i == 1 {
			os.Setenv("QPQ_TEST_PROTOCOL_VERSION", "3")
		}
		ns = append(ns, daemontest.Start(t, c))
		os.Unsetenv("QPQ_TEST_PROTOCOL_VERSION")
	}
	older := ns[1]
	for _, n := range ns {
		testkit.WaitFor(t, 30*time.Second, "every descriptor at every node", func() bool {
			return n.D.Status().Placement.Nodes >= 5
		})
	}
	if s := older.D.Status().Onion; s.Relay {
		t.Fatal("the node speaking protocol 3 relays onion packets")
	}
	bob := e2e.NewUser()
	atE := userAt(t, ctx, ns[4], bob)
	atA := userAt(t, ctx, ns[0], e2e.NewUser())
	descs, err := atA.c.Descriptors(ctx, 64)
	if err != nil {
		t.Fatal(err)
	}
	cache := route.NewCache()
	cache.Add(descs, time.Now())
	for _, r := range cache.Relays() {
		if r.FP == older.ID.Fingerprint() {
			t.Fatal("the older node is offered as an onion relay")
		}
	}
	if n := len(cache.Relays()); n != 4 {
		t.Fatalf("%d relays offered, want the 4 nodes of this release", n)
	}
	b := bundleAt(t, ctx, atA, bob.Fingerprint())
	env := e2etest.SealDM(t, atA.u, b, []byte("around the old node"))
	s := &route.Sender{Cache: cache, Entry: ns[0].ID.Fingerprint(), Wait: 10 * time.Second}
	if res, err := s.Send(ctx, atA.c, env); err != nil || !res.Acked {
		t.Fatalf("send: %+v %v", res, err)
	}
	readAll(t, ctx, atE, map[gossip.ID]bool{env.ID: true})
}
