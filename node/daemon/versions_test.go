package daemon_test

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/quicproquo/qpq/node/client"
	"github.com/quicproquo/qpq/node/config"
	"github.com/quicproquo/qpq/node/e2e"

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
