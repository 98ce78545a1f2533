package daemon_test

import (
	"bytes"
	"context"
	"slices"
	"testing"
	"time"

	"github.com/quicproquo/qpq/gossip"
	"github.com/quicproquo/qpq/mesh/identity"
	"github.com/quicproquo/qpq/mesh/testkit"
	"github.com/quicproquo/qpq/node/client"
	"github.com/quicproquo/qpq/node/config"
	"github.com/quicproquo/qpq/node/daemon/daemontest"
	"github.com/quicproquo/qpq/node/e2e"
	"github.com/quicproquo/qpq/node/e2e/e2etest"
)

// placementLine starts a line of n nodes with placement k (every
// descriptor eligible at once, pulls every 200 ms) and waits until each
// knows every node's descriptor. edit may change node i's configuration.
func placementLine(t *testing.T, n, k int, edit func(i int, c *config.Config)) []*daemontest.Node {
	t.Helper()
	dir := t.TempDir()
	var cfgs []config.Config
	for i := range n {
		c := daemontest.Config(dir, string(rune('a'+i)))
		// One link each way only: the line stays a line, so a DM that
		// floods visits every node and one that is placed need not.
		c.MaxLinks = 1
		c.Placement, c.PlacementMinAge, c.PlacementPull, c.PlacementFallback = k, 0, 200*time.Millisecond, time.Hour
		if edit != nil {
			edit(i, &c)
		}
		cfgs = append(cfgs, c)
	}
	ns := daemontest.Line(t, cfgs...)
	for _, x := range ns {
		testkit.WaitFor(t, 30*time.Second, "every node's descriptor to reach every node", func() bool {
			return x.D.Status().Placement.Nodes >= n
		})
	}
	return ns
}

func cmpFP(a, b identity.Fingerprint) int { return bytes.Compare(a[:], b[:]) }

// user is a person with a client at one node.
type user struct {
	u  *e2e.User
	c  *client.Client
	mb *client.Mailbox
}

func userAt(t testing.TB, ctx context.Context, n *daemontest.Node, u *e2e.User) *user {
	t.Helper()
	c, err := client.Dial(ctx, n.D.Addr(), n.ID.Fingerprint())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	signed, _ := u.SignedBundle(1, time.Hour)
	mb, err := c.Authenticate(ctx, u, signed)
	if err != nil {
		t.Fatal(err)
	}
	return &user{u: u, c: c, mb: mb}
}

// bundleAt waits until the recipient's bundle reaches from's node and
// returns it.
func bundleAt(t testing.TB, ctx context.Context, from *user, to identity.Fingerprint) e2e.Bundle {
	t.Helper()
	var b e2e.Bundle
	testkit.WaitFor(t, 20*time.Second, "the recipient's bundle to reach the sender's node", func() bool {
		var err error
		b, err = from.c.LookupBundle(ctx, to)
		return err == nil
	})
	return b
}

// sendDMs seals n DMs from alice's client to bob and enqueues them.
func sendDMs(t *testing.T, ctx context.Context, from *user, to identity.Fingerprint, n int) map[gossip.ID]bool {
	t.Helper()
	b := bundleAt(t, ctx, from, to)
	sent := map[gossip.ID]bool{}
	for i := range n {
		env := e2etest.SealDM(t, from.u, b, []byte{byte(i)})
		sent[env.ID] = true
		if stored, err := from.c.Enqueue(ctx, env); err != nil || !stored {
			t.Fatalf("enqueue %d: %v %v", i, stored, err)
		}
	}
	return sent
}

// readAll fetches and acknowledges until every DM of sent has come,
// failing on a DM fetched twice or never sent.
func readAll(t *testing.T, ctx context.Context, to *user, sent map[gossip.ID]bool) {
	t.Helper()
	got := map[gossip.ID]bool{}
	for len(got) < len(sent) {
		envs, err := to.mb.Fetch(ctx, 64, 10*time.Second)
		if err != nil {
			t.Fatalf("fetch after %d of %d: %v", len(got), len(sent), err)
		}
		if len(envs) == 0 {
			t.Fatalf("only %d of %d DMs reached the recipient", len(got), len(sent))
		}
		var secrets [][]byte
		for _, e := range envs {
			if !sent[e.ID] || got[e.ID] {
				t.Fatalf("fetched %v: never sent or fetched before", e.ID)
			}
			got[e.ID] = true
			m, err := e2e.OpenDM(to.u, e.Payload)
			if err != nil {
				t.Fatal(err)
			}
			secrets = append(secrets, m.ReceiptSecret[:])
		}
		if _, err := to.mb.Ack(ctx, secrets); err != nil {
			t.Fatal(err)
		}
	}
}

// holders lists the nodes whose stores hold any DM of sent.
func holders(ns []*daemontest.Node, sent map[gossip.ID]bool) []identity.Fingerprint {
	var out []identity.Fingerprint
	for _, n := range ns {
		if n.D == nil {
			continue
		}
		for id := range sent {
			if has, _ := n.D.HasEnvelope(id); has {
				out = append(out, n.ID.Fingerprint())
				break
			}
		}
	}
	return out
}

// With placement on, DMs from a user at one end of a line to a user at
// the other reach only the sender's node, the mailbox nodes and the
// recipient's node (the others never store a copy), arrive exactly once,
// and the recipient's receipts delete every copy.
func TestPlacedDMsTravelToTheMailboxNodesOnly(t *testing.T) {
	testkit.LeakCheck(t)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	ns := placementLine(t, 5, 1, nil)
	a, e := ns[0], ns[4]
	// A recipient whose one mailbox node is in the middle of the line:
	// the DM must skip the other middle nodes to get there and back.
	var bob *e2e.User
	var box identity.Fingerprint
	for {
		bob = e2e.NewUser()
		mbx := a.D.MailboxNodes(bob.Fingerprint())
		if len(mbx) == 1 && mbx[0] != a.ID.Fingerprint() && mbx[0] != e.ID.Fingerprint() {
			box = mbx[0]
			break
		}
	}
	if got := e.D.MailboxNodes(bob.Fingerprint()); !slices.Equal(got, []identity.Fingerprint{box}) {
		t.Fatalf("the two ends place bob's mailbox on %v and %v", got, box)
	}
	atE := userAt(t, ctx, e, bob)
	atA := userAt(t, ctx, a, e2e.NewUser())
	sent := sendDMs(t, ctx, atA, bob.Fingerprint(), 5)
	testkit.WaitFor(t, 30*time.Second, "the DMs to be pulled to the recipient's node", func() bool {
		return e.D.Status().Placement.Pulled == int64(len(sent))
	})
	want := []identity.Fingerprint{a.ID.Fingerprint(), box, e.ID.Fingerprint()}
	slices.SortFunc(want, cmpFP)
	got := holders(ns, sent)
	slices.SortFunc(got, cmpFP)
	if !slices.Equal(got, want) {
		t.Fatalf("the DMs are stored on %d nodes %v, want the sender's, the mailbox's and the recipient's %v", len(got), got, want)
	}
	if s := a.D.Status().Placement; s.Placed != int64(len(sent)) || s.Flooded != 0 {
		t.Fatalf("sender's placement: %+v, want %d placed, none flooded", s, len(sent))
	}
	readAll(t, ctx, atE, sent)
	testkit.WaitFor(t, 30*time.Second, "the receipts to delete every copy", func() bool {
		return len(holders(ns, sent)) == 0
	})
}

// A recipient's node that does not pull, or a mailbox node that is down,
// costs time, not the DM: a placed DM whose receipt does not come floods
// after the fallback time, and a placement that fails floods at once.
func TestPlacementFallsBackToFlooding(t *testing.T) {
	testkit.LeakCheck(t)
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	dir := t.TempDir()
	cfg := func(name string, pull bool) config.Config {
		c := daemontest.Config(dir, name)
		c.MaxLinks = 1
		c.Placement, c.PlacementMinAge, c.PlacementPull, c.PlacementFallback = 1, 0, 200*time.Millisecond, 2*time.Second
		if !pull {
			c.Placement = 0 // the recipient's node does not pull
		}
		return c
	}
	// a - b - d, and x a leaf at b: x can go down without cutting the line.
	ns := daemontest.Line(t, cfg("a", true), cfg("b", true), cfg("d", false))
	a, b, d := ns[0], ns[1], ns[2]
	xc := cfg("x", true)
	xc.Peers = append(xc.Peers, b.PeerAddr())
	x := daemontest.Start(t, xc)
	testkit.WaitFor(t, 20*time.Second, "x to link to b", func() bool { return daemontest.Linked(b.D, x.ID.Fingerprint()) })
	all := []*daemontest.Node{a, b, d, x}
	for _, n := range all {
		testkit.WaitFor(t, 30*time.Second, "every node's descriptor to reach every node", func() bool {
			return n.D.Status().Placement.Nodes >= len(all)
		})
	}
	var bob *e2e.User
	for {
		bob = e2e.NewUser()
		if got := a.D.MailboxNodes(bob.Fingerprint()); len(got) == 1 && got[0] == x.ID.Fingerprint() {
			break
		}
	}
	atD := userAt(t, ctx, d, bob)
	atA := userAt(t, ctx, a, e2e.NewUser())

	// Placed on x, never pulled: flooded after the fallback time.
	sent := sendDMs(t, ctx, atA, bob.Fingerprint(), 2)
	readAll(t, ctx, atD, sent)
	if s := a.D.Status().Placement; s.Placed != 2 || s.Fallbacks != 2 || s.Flooded != 0 {
		t.Fatalf("sender's placement: %+v, want 2 placed and 2 flooded by the fallback", s)
	}

	// x down: the placement fails and the DM floods at once.
	x.Stop()
	sent = sendDMs(t, ctx, atA, bob.Fingerprint(), 1)
	// The dial to x fails within its timeout (10 s), then the DM floods.
	testkit.WaitFor(t, 30*time.Second, "the failed placement to flood the DM", func() bool {
		return a.D.Status().Placement.Flooded == 1
	})
	readAll(t, ctx, atD, sent)
	if s := a.D.Status().Placement; s.Placed != 2 || s.Flooded != 1 {
		t.Fatalf("sender's placement: %+v, want the third DM flooded at once", s)
	}
}
