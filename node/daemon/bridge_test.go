//go:build bridge

package daemon

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/quicproquo/qpq/gossip"
	"github.com/quicproquo/qpq/gossip/gossiptest"
	"github.com/quicproquo/qpq/gossip/relay"
	"github.com/quicproquo/qpq/mesh/descriptor"
	"github.com/quicproquo/qpq/mesh/testkit"
	"github.com/quicproquo/qpq/node/config"
	"github.com/quicproquo/qpq/schemas"
)

// The daemon's side of a bridge link, over an in-memory pipe standing in
// for the libp2p stream (node/bridge/p2p tests the same over real libp2p
// hosts; this module does not link libp2p).

func bridgeDaemon(t *testing.T, island string, channels ...[32]byte) *Daemon {
	return newDaemon(t, func(c *config.Config) {
		c.Bridge.Island = island
		c.Bridge.Channels = channels
	})
}

// pipeBridge links a and b as bridges of their islands over a pipe and
// returns each side's RunBridge result channel.
func pipeBridge(t *testing.T, a, b *Daemon) (chan error, chan error) {
	t.Helper()
	ca, cb := net.Pipe()
	ea, eb := make(chan error, 1), make(chan error, 1)
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		ea <- a.RunBridge(ctx, BridgeLink{Peer: b.Fingerprint(), Island: b.cfg.Bridge.Island, Conn: ca, Outbound: true, Addr: "pipe"})
	}()
	go func() {
		eb <- b.RunBridge(ctx, BridgeLink{Peer: a.Fingerprint(), Island: a.cfg.Bridge.Island, Conn: cb, Addr: "pipe"})
	}()
	t.Cleanup(func() {
		cancel()
		<-ea
		<-eb
	})
	return ea, eb
}

func storedDescriptorOf(t *testing.T, d *Daemon, of *Daemon) (descriptor.Descriptor, bool) {
	t.Helper()
	var found descriptor.Descriptor
	var ok bool
	d.st.IDs(func(id gossip.ID, k schemas.Envelope_Kind) bool {
		if k != schemas.Envelope_Kind_descriptor {
			return true
		}
		env, has, _ := d.st.Get(id)
		if !has {
			return true
		}
		signed, err := gossip.SignedBytes(env)
		if err != nil {
			return true
		}
		if desc, err := descriptor.Verify(signed); err == nil && desc.FP == of.Fingerprint() {
			found, ok = desc, true
			return false
		}
		return true
	})
	return found, ok
}

func TestBridgeLinkCarriesDMsAndOnlyBridgedChannels(t *testing.T) {
	town, street := [32]byte{1}, [32]byte{2}
	a := bridgeDaemon(t, "nord", town)
	b := bridgeDaemon(t, "sued", town)
	pipeBridge(t, a, b)
	testkit.WaitFor(t, 10*time.Second, "the bridge link", func() bool { return a.Bridged(b.Fingerprint()) && b.Bridged(a.Fingerprint()) })

	dm := gossiptest.DM(nil, nil, 3600, 8)
	bStreet := gossiptest.Hops(gossiptest.Broadcast(street[:], 3600), 8)
	bTown := gossiptest.Hops(gossiptest.Broadcast(town[:], 3600), 8)
	for _, e := range []gossip.Envelope{dm, bStreet, bTown} {
		if _, err := a.eng.Accept(e, relay.Source{Client: "test"}); err != nil {
			t.Fatal(err)
		}
	}
	has := func(d *Daemon, id gossip.ID) bool { _, ok, _ := d.st.Get(id); return ok }
	testkit.WaitFor(t, 10*time.Second, "the DM and the town's broadcast across", func() bool { return has(b, dm.ID) && has(b, bTown.ID) })
	if has(b, bStreet.ID) {
		t.Fatal("a broadcast of a channel not bridged crossed")
	}

	// a's own descriptor crossed, marked with its island; b does not
	// learn a as a node to dial.
	testkit.WaitFor(t, 10*time.Second, "a's descriptor at b", func() bool { _, ok := storedDescriptorOf(t, b, a); return ok })
	desc, _ := storedDescriptorOf(t, b, a)
	if desc.Island != "nord" || b.ofThisIsland(desc) {
		t.Fatalf("a's descriptor at b: island %q", desc.Island)
	}
	st := b.Status()
	var found bool
	for _, p := range st.Peers {
		if p.Via == viaBridge && p.Fingerprint == a.Fingerprint().String() && p.Island == "nord" && p.Crossed > 0 {
			found = true
		}
	}
	if !found {
		t.Fatalf("b's status does not show the bridge link: %+v", st.Peers)
	}
}

// A descriptor crosses a bridge link once: the other side holds it
// marked, under another id, so without the link's memory every summary
// from there would have it sent again.
func TestBridgeLinkSendsEachDescriptorOnce(t *testing.T) {
	a := bridgeDaemon(t, "nord")
	b := bridgeDaemon(t, "sued")
	pipeBridge(t, a, b)
	testkit.WaitFor(t, 10*time.Second, "a's descriptor at b", func() bool { _, ok := storedDescriptorOf(t, b, a); return ok })
	in := func() uint64 {
		b.mu.Lock()
		defer b.mu.Unlock()
		return b.bridges[a.Fingerprint()].in.descs.Load()
	}
	first := in()
	// a paces b's summaries (the link-up ones used the burst): the next
	// is taken within a summary gap.
	testkit.WaitFor(t, 30*time.Second, "a to take a summary from b", func() bool {
		err := b.eng.SendSummary(context.Background(), a.Fingerprint())
		if err != nil && !strings.Contains(err.Error(), "too fast") {
			t.Fatal(err)
		}
		if err != nil {
			time.Sleep(time.Second)
		}
		return err == nil
	})
	time.Sleep(time.Second) // a's answer, had it one
	if got := in(); got != first {
		t.Fatalf("b received %d descriptors after a summary, %d before: they crossed again", got, first)
	}
}

func TestBridgeLinkRefusesAPeerOfTheSameIsland(t *testing.T) {
	a := bridgeDaemon(t, "nord")
	b := bridgeDaemon(t, "nord")
	ea, _ := pipeBridge(t, a, b)
	select {
	case err := <-ea:
		if err == nil || !strings.Contains(err.Error(), `island "nord", as this bridge is`) {
			t.Fatalf("RunBridge: %v", err)
		}
		ea <- err // for the cleanup
	case <-time.After(10 * time.Second):
		t.Fatal("a bridge link to the same island was not refused")
	}
	if a.Bridged(b.Fingerprint()) {
		t.Fatal("refused link registered")
	}
}

func TestBridgeBucketAllowsItsRateAndTwiceAtOnce(t *testing.T) {
	clock := testkit.NewClock(time.Unix(0, 0))
	bk := newBridgeBucket(2, clock.Now)
	if got := bk.take(10); got != 4 {
		t.Fatalf("first burst took %d, want 4 (twice the rate)", got)
	}
	if got := bk.take(1); got != 0 {
		t.Fatalf("empty bucket gave %d", got)
	}
	if w := bk.wait(); w != 500*time.Millisecond {
		t.Fatalf("wait %v, want 500ms", w)
	}
	clock.Advance(time.Second)
	if got := bk.take(10); got != 2 {
		t.Fatalf("after 1 s took %d, want 2", got)
	}
}

// A push from a sender without flow control that the rate would cut
// short is refused whole, so that it is sent again whole, and the tokens
// go back.
func TestBridgeInRefusesAPartialPushWithoutFlowControl(t *testing.T) {
	d := bridgeDaemon(t, "nord")
	clock := testkit.NewClock(time.Unix(0, 0))
	in := &bridgeIn{d: d, island: "sued", bucket: newBridgeBucket(1, clock.Now)}
	envs := []gossip.Envelope{gossiptest.DM(nil, nil, 3600, 1), gossiptest.DM(nil, nil, 3600, 1), gossiptest.DM(nil, nil, 3600, 1)}
	if _, err := in.AcceptPush(d.Fingerprint(), envs, false); err != relay.ErrRateLimited {
		t.Fatalf("partial push without flow control: %v, want ErrRateLimited", err)
	}
	for _, e := range envs {
		if _, ok, _ := d.st.Get(e.ID); ok {
			t.Fatal("a refused push stored an envelope")
		}
	}
	if got := in.bucket.take(2); got != 2 {
		t.Fatalf("tokens after the refusal: %d, want 2 back", got)
	}
	if res, err := in.AcceptPush(d.Fingerprint(), nil, true); err != nil || res != (relay.PushResult{}) {
		t.Fatalf("empty push: %+v %v", res, err)
	}
}
