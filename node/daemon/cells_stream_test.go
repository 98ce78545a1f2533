package daemon_test

import (
	"context"
	"math/rand/v2"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/quicproquo/qpq/gossip"
	"github.com/quicproquo/qpq/gossip/gossiptest"
	"github.com/quicproquo/qpq/mesh/testkit"
	"github.com/quicproquo/qpq/node/config"
	"github.com/quicproquo/qpq/node/daemon/daemontest"
	"github.com/quicproquo/qpq/node/e2e"
	"github.com/quicproquo/qpq/node/e2e/e2etest"
	"github.com/quicproquo/qpq/node/route"
)

// With decoys on at both ends, the calls that carry messages ride the
// link's cell stream: a capture of what a sends b while a script sends
// DMs, receipts and broadcasts at random times shows the same datagram
// sizes as decoys alone, and the cells keep the Poisson clock's times.
// Everything sent arrives: bob reads the DMs, b holds the broadcasts and
// receipts, and none of it went by the link's RPC stream.
func TestDecoysHideWhenMessagesMove(t *testing.T) {
	testkit.LeakCheck(t)
	t.Setenv("QUIC_GO_DISABLE_GSO", "1")
	t.Setenv("QPQ_TEST_DECOY_SEED", "11")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	const rate, span, each = 20.0, 12 * time.Second, 4
	p := newCellPair(t, ctx, rate)
	a, b := p.ns[0], p.ns[1]
	alice := p.at
	bob := userAt(t, ctx, b, e2e.NewUser())
	bobBundle := bundleAt(t, ctx, alice, bob.u.Fingerprint())

	// Bob's DMs to alice, read before the captures; she acknowledges
	// them during one, so their receipts go from a to b then.
	toAlice := map[gossip.ID]bool{}
	aliceBundle := bundleAt(t, ctx, bob, alice.u.Fingerprint())
	for i := range each {
		env := e2etest.SealDM(t, bob.u, aliceBundle, []byte{byte(i)})
		toAlice[env.ID] = true
		if _, err := bob.c.Enqueue(ctx, env); err != nil {
			t.Fatal(err)
		}
	}
	var secrets [][]byte
	for len(secrets) < each {
		envs, err := alice.mb.Fetch(ctx, 64, 10*time.Second)
		if err != nil || len(envs) == 0 {
			t.Fatalf("alice fetched %d of bob's %d DMs: %v", len(secrets), each, err)
		}
		for _, e := range envs {
			m, err := e2e.OpenDM(alice.u, e.Payload)
			if err != nil {
				t.Fatal(err)
			}
			secrets = append(secrets, m.ReceiptSecret[:])
		}
	}
	time.Sleep(2 * time.Second) // the DMs' pushes and their answers are done
	before, beforeA := b.D.Status(), a.D.Status()

	quiet := capture(t, p.filter, func() { time.Sleep(span) })
	toBob := map[gossip.ID]bool{}
	busy := capture(t, p.filter, func() {
		rnd := rand.New(rand.NewPCG(8, 9))
		type job struct {
			at   time.Duration
			kind int
		}
		var jobs []job
		for i := range 3 * each {
			jobs = append(jobs, job{time.Duration(rnd.Int64N(int64(span))), i % 3})
		}
		slices.SortFunc(jobs, func(x, y job) int { return int(x.at - y.at) })
		start := time.Now()
		for i, j := range jobs {
			time.Sleep(time.Until(start.Add(j.at)))
			switch j.kind {
			case 0:
				env := e2etest.SealDM(t, alice.u, bobBundle, []byte{byte(i)})
				toBob[env.ID] = true
				if _, err := alice.c.Enqueue(ctx, env); err != nil {
					t.Error(err)
				}
			case 1:
				if _, err := alice.c.Enqueue(ctx, gossiptest.Broadcast(nil, 600)); err != nil {
					t.Error(err)
				}
			case 2:
				if _, err := alice.mb.Ack(ctx, secrets[:1]); err != nil {
					t.Error(err)
				}
				secrets = secrets[1:]
			}
		}
		time.Sleep(time.Until(start.Add(span)))
	})
	checkCaptures(t, quiet, busy, rate, "with DMs, receipts and broadcasts")

	readAll(t, ctx, bob, toBob)
	testkit.WaitFor(t, 20*time.Second, "b to hold the broadcasts and receipts", func() bool {
		k := b.D.Status().Store.Kinds
		return k["broadcast"]-before.Store.Kinds["broadcast"] == each && k["receipt"]-before.Store.Kinds["receipt"] >= each
	})
	st := a.D.Status().Cells
	if st.Streamed != 1 || st.StreamSent-beforeA.Cells.StreamSent < 3*each/2 || st.StreamOverflow != 0 {
		t.Errorf("a's cells: %+v (before the captures: %+v)", st, beforeA.Cells)
	}
}

// A node of protocol version 5 (the previous release, stood in for by
// QPQ_TEST_PROTOCOL_VERSION) has cells but no message stream: with
// decoys on at both ends, DMs to it still go by the link's RPC stream,
// and arrive.
func TestMessagesToAVersion5NodeGoByRPC(t *testing.T) {
	testkit.LeakCheck(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	dir := t.TempDir()
	ca := daemontest.Config(dir, "a")
	ca.DecoyRate = 10
	a := daemontest.Start(t, ca)
	os.Setenv("QPQ_TEST_PROTOCOL_VERSION", "5")
	cb := daemontest.Config(dir, "b")
	cb.DecoyRate = 10
	cb.Peers = append(cb.Peers, a.PeerAddr())
	b := daemontest.Start(t, cb)
	os.Unsetenv("QPQ_TEST_PROTOCOL_VERSION")
	testkit.WaitFor(t, 20*time.Second, "a and b to link", func() bool {
		return daemontest.Linked(a.D, b.ID.Fingerprint()) && daemontest.Linked(b.D, a.ID.Fingerprint())
	})
	alice, bob := userAt(t, ctx, a, e2e.NewUser()), userAt(t, ctx, b, e2e.NewUser())
	sent := sendDMs(t, ctx, alice, bob.u.Fingerprint(), 3)
	readAll(t, ctx, bob, sent)
	for _, n := range []*daemontest.Node{a, b} {
		testkit.WaitFor(t, 10*time.Second, "decoys on the link", func() bool { return n.D.Status().Cells.SentCover > 0 })
		if st := n.D.Status().Cells; st.Links != 1 || st.Streamed != 0 || st.StreamSent != 0 || st.StreamReceived != 0 {
			t.Errorf("%s's cells with a version 5 neighbour: %+v", n.ID.Fingerprint(), st)
		}
	}
}

// With decoys on, a relay never dials the next hop of an onion packet
// (the dial would show when the packet moved): on a line a-b-c, a packet
// whose first relay is c goes from a by store and forward, in the
// links' cells, and c still peels it and hands it on to b.
func TestOnionWithDecoysDoesNotDial(t *testing.T) {
	testkit.LeakCheck(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	ns := onionLineWith(t, 3, func(i int, c *config.Config) { c.DecoyRate = 10 })
	a, b, c := ns[0], ns[1], ns[2]
	if daemontest.Linked(a.D, c.ID.Fingerprint()) {
		t.Fatal("a and c are linked; the test needs them not to be")
	}
	u := userAt(t, ctx, a, e2e.NewUser())
	rs := relaysAt(t, ctx, u)
	pkts, err := route.Packets(gossiptest.Broadcast(nil, 600), []route.Relay{rs[c.ID.Fingerprint()], rs[b.ID.Fingerprint()]}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := u.c.SendOnion(ctx, c.ID.Fingerprint(), pkts[0], nil, 0); err != nil {
		t.Fatal(err)
	}
	testkit.WaitFor(t, 30*time.Second, "c to peel the packet and b to peel what c sent on", func() bool {
		return c.D.Status().Onion.Peeled == 1 && b.D.Status().Onion.Peeled == 1
	})
	if st := a.D.Status(); st.Onion.Stored != 1 || st.Onion.Forwarded != 0 || st.Dialled.Out != 0 || st.Dialled.Dialling != 0 {
		t.Errorf("a: onion %+v, dialled %+v; want the packet by store and forward, no dial", st.Onion, st.Dialled)
	}
	if st := b.D.Status().Cells; st.StreamReceived == 0 {
		t.Errorf("b received no stream cells: %+v", st)
	}
}

// With decoys on, placement does not dial a mailbox node that is not a
// neighbour (the dial would show when the DM moved): on a line a-b-c,
// a DM whose mailbox node is c floods from a instead, in the links'
// cells, and reaches its recipient.
func TestPlacementWithDecoysDoesNotDial(t *testing.T) {
	testkit.LeakCheck(t)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	ns := placementLine(t, 3, 1, func(i int, c *config.Config) { c.DecoyRate = 10 })
	a, c := ns[0], ns[2]
	if daemontest.Linked(a.D, c.ID.Fingerprint()) {
		t.Fatal("a and c are linked; the test needs them not to be")
	}
	var bob *e2e.User
	for {
		bob = e2e.NewUser()
		if mbx := a.D.MailboxNodes(bob.Fingerprint()); len(mbx) == 1 && mbx[0] == c.ID.Fingerprint() {
			break
		}
	}
	atC := userAt(t, ctx, c, bob)
	atA := userAt(t, ctx, a, e2e.NewUser())
	sent := sendDMs(t, ctx, atA, bob.Fingerprint(), 2)
	readAll(t, ctx, atC, sent)
	st := a.D.Status()
	if st.Placement.Flooded != 2 || st.Placement.Placed != 0 || st.Dialled.Out != 0 || st.Dialled.Dialling != 0 {
		t.Errorf("a: placement %+v, dialled %+v; want both DMs flooded, no dial", st.Placement, st.Dialled)
	}
}
