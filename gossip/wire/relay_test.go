package wire

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"capnproto.org/go/capnp/v3"

	"github.com/quicproquo/qpq/gossip"
	"github.com/quicproquo/qpq/gossip/relay"
	"github.com/quicproquo/qpq/gossip/store"
	"github.com/quicproquo/qpq/mesh/identity"
	"github.com/quicproquo/qpq/mesh/link"

	"github.com/quicproquo/qpq/mesh/testkit"

	"github.com/quicproquo/qpq/gossip/gossiptest"
)

// wnode is a relay engine over a real store, reachable over QUIC.
type wnode struct {
	id  *identity.Node
	st  *store.Store
	eng *relay.Engine
}

func newWNode(t *testing.T) *wnode {
	t.Helper()
	st, err := store.Open(filepath.Join(t.TempDir(), "store.db"), store.Options{MaxBytes: 8 << 20, MaxTTL: 7 * 24 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	n := &wnode{id: newID(t), st: st, eng: relay.New(relay.Options{Store: st})}
	t.Cleanup(func() { n.eng.Close(); n.st.Close() })
	return n
}

// serverFor is n's MeshPeer for the neighbour from.
func (n *wnode) serverFor(from *wnode) func() capnp.Client {
	return func() capnp.Client {
		return NewServer(from.id.Fingerprint(), ServerOptions{Local: link.LocalHello("test", "qpq"), Handler: n.eng}).Client()
	}
}

// waitStored waits until n holds id.
func waitStored(t *testing.T, n *wnode, id gossip.ID) {
	t.Helper()
	testkit.WaitFor(t, 10*time.Second, fmt.Sprintf("envelope %s to reach the neighbour", id), func() bool {
		_, ok, _ := n.st.Get(id)
		return ok
	})
}

func TestEnginesRelayOverQUIC(t *testing.T) {
	testkit.LeakCheck(t)
	// Two engines linked by real QUIC, each side's engine behind a wire
	// Server and its neighbour behind a wire Peer: a push travels at once,
	// and anti-entropy (Engine.Run's summary at link-up) brings what was
	// stored before the link came up.
	a, b := newWNode(t), newWNode(t)
	early := gossiptest.Hops(gossiptest.DM(nil, nil, 60, 1), 3)
	if added, err := a.eng.Accept(early, relay.Source{Client: "c"}); err != nil || !added {
		t.Fatalf("accept before the link: %v %v", added, err)
	}
	la, lb := linkPair(t, a.id, b.id, a.serverFor(b), b.serverFor(a))
	defer a.eng.AddPeer(b.id.Fingerprint(), NewPeer(la.Remote(), la.Version()))()
	defer b.eng.AddPeer(a.id.Fingerprint(), NewPeer(lb.Remote(), lb.Version()))()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go b.eng.Run(ctx) // its summary at link-up pulls early across
	waitStored(t, b, early.ID)

	late := gossiptest.Hops(gossiptest.DM(nil, nil, 60, 1), 3)
	late.Destination[1] = 9
	late.ID = gossip.ComputeID(late.Kind, late.Destination, late.ReceiptTag, late.Payload)
	if added, err := a.eng.Accept(late, relay.Source{Client: "c"}); err != nil || !added {
		t.Fatalf("accept on the link: %v %v", added, err)
	}
	waitStored(t, b, late.ID)
}

func TestPanickingCallDropsTheLinkOverQUIC(t *testing.T) {
	testkit.LeakCheck(t)
	// As the node wires it: Drop aborts the link the call came on, from
	// inside the call, without waiting for the call to end.
	a, b := newID(t), newID(t)
	var lb *link.Link
	ready := make(chan struct{})
	bootB := func() capnp.Client {
		return NewServer(a.Fingerprint(), ServerOptions{
			Local:   link.LocalHello("test", "qpq"),
			Handler: &recHandler{panicOn: "raise"},
			Drop: func(reason string) {
				<-ready
				lb.Abort(link.CodeRefused, reason)
			},
		}).Client()
	}
	bootA := func() capnp.Client {
		return NewServer(b.Fingerprint(), ServerOptions{Local: link.LocalHello("test", "qpq")}).Client()
	}
	la, l := linkPair(t, a, b, bootA, bootB)
	lb = l
	close(ready)
	err := NewPeer(la.Remote(), la.Version()).Raise(ctxT(t), []relay.HopRaise{{ID: gossip.ID{1}, HopLimit: 2}})
	if err == nil {
		t.Fatal("a raise whose handler panicked succeeded")
	}
	select {
	case <-la.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("the link stayed up after a call panicked")
	}
}
