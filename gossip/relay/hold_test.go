package relay

import (
	"context"
	"testing"

	"github.com/quicproquo/qpq/gossip"
	"github.com/quicproquo/qpq/gossip/gossiptest"
)

// A held DM stays on its node (no push, no summary answer) until it is
// released, then floods the line as any DM does.
func TestHeldDMStaysUntilReleased(t *testing.T) {
	clock := newClock()
	ns := line(t, clock, 3)
	e := gossiptest.DM(nil, nil, 3600, 1)
	if added, err := ns[0].eng.Accept(e, Source{Client: "c", Hold: true}); err != nil || !added {
		t.Fatalf("accept held: %v %v", added, err)
	}
	if !ns[0].eng.Held(e.ID) {
		t.Fatal("a DM accepted with Hold is not held")
	}
	// A summary from the neighbour shows it lacks the DM: still not sent.
	if err := ns[1].eng.SendSummary(context.Background(), ns[0].fp); err != nil {
		t.Fatal(err)
	}
	quiet(t, ns...)
	if ns[1].st.Has(e.ID) {
		t.Fatal("a held DM reached a neighbour")
	}
	if !ns[0].eng.Release(e.ID) {
		t.Fatal("Release of a held DM says it was not held")
	}
	waitHas(t, ns[2], e.ID, true)
	if ns[0].eng.Release(e.ID) {
		t.Fatal("a second Release says the DM was held")
	}
}

// A flood passing through a node that holds the DM goes on past it:
// otherwise a mailbox node on the only path would stop the fallback.
func TestFloodPassesThroughAHolder(t *testing.T) {
	clock := newClock()
	ns := line(t, clock, 3)
	e := gossiptest.DM(nil, nil, 3600, 1)
	if _, err := ns[1].eng.Accept(e, Source{Client: "placed", Hold: true}); err != nil {
		t.Fatal(err)
	}
	quiet(t, ns...)
	if ns[0].st.Has(e.ID) || ns[2].st.Has(e.ID) {
		t.Fatal("a held DM left its node")
	}
	// Node 0's copy arrives without the hold (a fallback flood).
	if _, err := ns[0].eng.Accept(e, Source{Client: "c"}); err != nil {
		t.Fatal(err)
	}
	waitHas(t, ns[2], e.ID, true)
	if ns[1].eng.Held(e.ID) {
		t.Fatal("the DM is still held after a flood passed through")
	}
}

// Pulled DMs are stored held; other kinds are refused; a receipt deletes
// a held DM and the purge forgets it.
func TestPulledDMsAreHeldAndReceiptsClearThem(t *testing.T) {
	clock := newClock()
	ns := line(t, clock, 2)
	secret := gossiptest.Random(gossip.SecretLen)
	tag := gossip.ReceiptTag(secret)
	dm := gossiptest.DM(nil, tag[:], 3600, 1)
	bc := gossiptest.Broadcast(nil, 3600)
	added, err := ns[0].eng.AcceptPulled(Source{Peer: ns[1].fp}, []gossip.Envelope{dm, bc})
	if err != nil || added != 1 {
		t.Fatalf("pulled: added %d, %v; want the DM only", added, err)
	}
	if ns[0].st.Has(bc.ID) {
		t.Fatal("a pulled broadcast was stored")
	}
	quiet(t, ns...)
	if ns[1].st.Has(dm.ID) {
		t.Fatal("a pulled DM was flooded on")
	}
	if n, err := ns[0].eng.Ack([][]byte{secret}, Source{Client: "c"}); err != nil || n != 1 {
		t.Fatalf("ack: deleted %d, err %v", n, err)
	}
	waitHas(t, ns[0], dm.ID, false)
	ns[0].eng.purge()
	if ns[0].eng.HeldCount() != 0 {
		t.Fatalf("%d held after the receipt and purge, want 0", ns[0].eng.HeldCount())
	}
}
