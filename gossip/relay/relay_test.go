package relay

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/quicproquo/qpq/gossip"
	"github.com/quicproquo/qpq/gossip/store"
	"github.com/quicproquo/qpq/mesh/descriptor"
	"github.com/quicproquo/qpq/mesh/identity"
	"github.com/quicproquo/qpq/node/e2e"
	"github.com/quicproquo/qpq/schemas"

	"github.com/quicproquo/qpq/mesh/testkit"

	"github.com/quicproquo/qpq/gossip/gossiptest"
)

// These tests run the engine over real bbolt stores. The link between
// engines is a direct call (memPeer) instead of QUIC, so that a shared
// fake clock can age every node's store together; the process tests in
// node/cmd/qpq cover the same paths over real QUIC.

// newClock is the fake clock every node of a test shares.
func newClock() *testkit.Clock {
	return testkit.NewClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
}

type tnode struct {
	fp    identity.Fingerprint
	path  string
	st    *store.Store
	eng   *Engine
	clock *testkit.Clock
	// mu guards eng against a neighbour's send loop while the test turns
	// the node off or on: a push to a node that is off fails, as over QUIC.
	mu sync.RWMutex
	// inFlight and pushes count the pushes into this node under way and
	// ever started: the quiet signal.
	inFlight, pushes atomic.Int64
}

func newTNode(t *testing.T, clock *testkit.Clock) *tnode {
	t.Helper()
	id, _ := identity.NewNode()
	n := &tnode{fp: id.Fingerprint(), path: filepath.Join(t.TempDir(), "store.db"), clock: clock}
	n.open(t)
	t.Cleanup(func() { n.close() })
	return n
}

func (n *tnode) open(t *testing.T) {
	t.Helper()
	st, err := store.Open(n.path, store.Options{MaxBytes: 8 << 20, MaxTTL: 7 * 24 * time.Hour, Clock: n.clock})
	if err != nil {
		t.Fatal(err)
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	n.st = st
	n.eng = New(Options{Store: st, Now: n.clock.Now})
}

func (n *tnode) close() {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.eng != nil {
		n.eng.Close()
		n.st.Close()
		n.eng = nil
	}
}

// memPeer delivers pushes and summaries to another engine directly.
type memPeer struct {
	to   *tnode
	from identity.Fingerprint
}

// errNodeOff is what a call to a node the test turned off returns.
var errNodeOff = errors.New("node is off")

func (p memPeer) Push(ctx context.Context, envs []gossip.Envelope) (PushResult, error) {
	p.to.pushes.Add(1)
	p.to.inFlight.Add(1)
	defer p.to.inFlight.Add(-1)
	p.to.mu.RLock()
	defer p.to.mu.RUnlock()
	if p.to.eng == nil {
		return PushResult{}, errNodeOff
	}
	return p.to.eng.AcceptPush(p.from, envs, true)
}

func (p memPeer) Summary(ctx context.Context, s Summary) error {
	p.to.mu.RLock()
	defer p.to.mu.RUnlock()
	if p.to.eng == nil {
		return errNodeOff
	}
	return p.to.eng.HandleSummary(p.from, s)
}

func (p memPeer) Raise(ctx context.Context, raises []HopRaise) error {
	p.to.mu.RLock()
	defer p.to.mu.RUnlock()
	if p.to.eng == nil {
		return errNodeOff
	}
	return p.to.eng.HandleRaise(p.from, raises)
}

// connect links a and b both ways and returns a function that unlinks them.
func connect(a, b *tnode) func() {
	ra := a.eng.AddPeer(b.fp, memPeer{to: b, from: a.fp})
	rb := b.eng.AddPeer(a.fp, memPeer{to: a, from: b.fp})
	return func() { ra(); rb() }
}

func waitHas(t *testing.T, n *tnode, id gossip.ID, want bool) {
	t.Helper()
	testkit.WaitFor(t, 10*time.Second, fmt.Sprintf("node %s: has(%s) = %v", n.fp.Short(), id, want), func() bool {
		_, ok, _ := n.st.Get(id)
		return ok == want
	})
}

// quiet waits until nothing moves between ns: no push under way and
// every push queue empty, over the kit's settle window. After it, an
// envelope that has not arrived will not arrive.
func quiet(t *testing.T, ns ...*tnode) {
	t.Helper()
	testkit.Settle(t, 10*time.Second, "the nodes", func() bool {
		for _, n := range ns {
			if n.inFlight.Load() != 0 || queued(n.eng) != 0 {
				return false
			}
		}
		return true
	}, func() int64 {
		var sum int64
		for _, n := range ns {
			sum += n.pushes.Load()
		}
		return sum
	})
}

// queued is the number of ids waiting in e's push queues.
func queued(e *Engine) int {
	e.peersMu.Lock()
	defer e.peersMu.Unlock()
	total := 0
	for _, p := range e.peers {
		total += p.queue.len()
	}
	return total
}

func line(t *testing.T, clock *testkit.Clock, k int) []*tnode {
	ns := make([]*tnode, k)
	for i := range ns {
		ns[i] = newTNode(t, clock)
	}
	for i := 0; i+1 < k; i++ {
		t.Cleanup(connect(ns[i], ns[i+1]))
	}
	return ns
}

func TestPushTravelsTheLineWithinHopLimit(t *testing.T) {
	clock := newClock()
	ns := line(t, clock, 4)
	e := gossiptest.Hops(gossiptest.DM(nil, nil, 3600, 2), 2)
	if added, err := ns[0].eng.Accept(e, Source{Client: "c"}); err != nil || !added {
		t.Fatalf("accept at origin: %v %v", added, err)
	}
	waitHas(t, ns[2], e.ID, true)
	got, _, _ := ns[2].st.Get(e.ID)
	if got.HopLimit != 0 {
		t.Fatalf("hop limit at the second hop = %d, want 0", got.HopLimit)
	}
	// Hop limit 0 is kept for local delivery only: a summary from node 3
	// still does not pull it across.
	if err := ns[3].eng.SendSummary(context.Background(), ns[2].fp); err != nil {
		t.Fatal(err)
	}
	quiet(t, ns...)
	if _, ok, _ := ns[3].st.Get(e.ID); ok {
		t.Fatal("an envelope with hop limit 2 travelled three hops")
	}
}

func TestAntiEntropyCatchesUpALateNeighbour(t *testing.T) {
	clock := newClock()
	a, b := newTNode(t, clock), newTNode(t, clock)
	var ids []gossip.ID
	for range 200 {
		e := gossiptest.Hops(gossiptest.DM(nil, nil, 3600, 2), 8)
		a.eng.Accept(e, Source{Client: "c"})
		ids = append(ids, e.ID)
	}
	defer connect(a, b)()
	if err := b.eng.SendSummary(context.Background(), a.fp); err != nil {
		t.Fatal(err)
	}
	for _, id := range ids {
		waitHas(t, b, id, true)
	}
}

func TestTTLExpiryPurgesEveryCopyAndRestartDoesNotRevive(t *testing.T) {
	clock := newClock()
	ns := line(t, clock, 3)
	e := gossiptest.Hops(gossiptest.DM(nil, nil, 3600, 2), 8)
	ns[0].eng.Accept(e, Source{Client: "c"})
	waitHas(t, ns[2], e.ID, true)

	// Node 2 goes off with its copy; the others age past the TTL.
	ns[2].close()
	clock.Advance(2 * time.Hour)
	for _, n := range ns[:2] {
		if exp, _, err := n.st.Purge(); err != nil || exp != 1 {
			t.Fatalf("purge: expired %d, err %v; want 1", exp, err)
		}
		waitHas(t, n, e.ID, false)
	}
	// The copy cannot come back: every node that expired it remembers.
	if added, err := ns[1].eng.Accept(e, Source{Client: "c"}); err != nil || added {
		t.Fatalf("re-injected expired envelope: added %v err %v", added, err)
	}
	// Node 2 restarts: its downtime is counted, its copy is expired too.
	ns[2].open(t)
	t.Cleanup(connect(ns[1], ns[2]))
	ns[2].st.Purge()
	if _, ok, _ := ns[2].st.Get(e.ID); ok {
		t.Fatal("restarted node still holds an expired envelope")
	}
}

func TestStaleNodeWithWrongClockCannotReinject(t *testing.T) {
	clock := newClock()
	a, b := newTNode(t, clock), newTNode(t, clock)
	unlink := connect(a, b)
	e := gossiptest.Hops(gossiptest.DM(nil, nil, 3600, 2), 8)
	a.eng.Accept(e, Source{Client: "c"})
	waitHas(t, b, e.ID, true)
	unlink()
	clock.Advance(2 * time.Hour)
	a.st.Purge()
	// b's clock is far off (it will not count its downtime) and it still
	// holds the copy; a's tombstone refuses it.
	if added, err := a.eng.Accept(e, Source{Peer: b.fp}); err != nil || added {
		t.Fatalf("a accepted an envelope it expired: added %v err %v", added, err)
	}
}

func TestReceiptDeletesCopiesAndForgedReceiptDeletesNothing(t *testing.T) {
	clock := newClock()
	ns := line(t, clock, 3)
	secret := make([]byte, 32)
	rand.Read(secret)
	tag := gossip.ReceiptTag(secret)
	e := gossiptest.Hops(gossiptest.DM(nil, nil, 3600, 2), 8)
	e.ReceiptTag = tag[:]
	e.ID = gossip.ComputeID(e.Kind, e.Destination, e.ReceiptTag, e.Payload)
	ns[0].eng.Accept(e, Source{Client: "c"})
	waitHas(t, ns[2], e.ID, true)

	// A forged receipt: right tag, wrong secret.
	forged, _ := gossip.NewReceipt(make([]byte, 32), 3600, 8)
	forged.Destination = tag[:]
	forged.ID = gossip.ComputeID(forged.Kind, forged.Destination, nil, forged.Payload)
	if _, err := ns[1].eng.Accept(forged, Source{Client: "c"}); !errors.Is(err, ErrForged) {
		t.Fatalf("forged receipt: got %v, want ErrForged", err)
	}
	for _, n := range ns {
		waitHas(t, n, e.ID, true)
	}

	// The real one, revealed at the far end, deletes every copy.
	if n, err := ns[2].eng.Ack([][]byte{secret}, Source{Client: "c"}); err != nil || n != 1 {
		t.Fatalf("ack: deleted %d, err %v", n, err)
	}
	for _, n := range ns {
		waitHas(t, n, e.ID, false)
	}
}

func TestRateLimitPerNeighbour(t *testing.T) {
	clock := newClock()
	a := newTNode(t, clock)
	flood := identity.Fingerprint{1}
	a.eng.o.PeerRate, a.eng.o.PeerBurst = 10, 20
	defer a.eng.AddPeer(flood, memPeer{to: a})()
	accepted, limited := 0, 0
	for range 100 {
		_, err := a.eng.Accept(gossiptest.Hops(gossiptest.DM(nil, nil, 3600, 2), 4), Source{Peer: flood})
		switch {
		case errors.Is(err, ErrRateLimited):
			limited++
		case err == nil:
			accepted++
		}
	}
	if accepted > 21 || limited == 0 {
		t.Fatalf("flooding neighbour: accepted %d, limited %d; want at most the burst", accepted, limited)
	}
	// Clients and other neighbours are unaffected.
	if added, err := a.eng.Accept(gossiptest.Hops(gossiptest.DM(nil, nil, 3600, 2), 4), Source{Client: "c"}); err != nil || !added {
		t.Fatalf("client blocked by a flooding neighbour: %v", err)
	}
	clock.Advance(time.Second)
	if _, err := a.eng.Accept(gossiptest.Hops(gossiptest.DM(nil, nil, 3600, 2), 4), Source{Peer: flood}); err != nil {
		t.Fatalf("after a second the neighbour may send again: %v", err)
	}
}

func FuzzReceiptSecret(f *testing.F) {
	r, _ := gossip.NewReceipt(make([]byte, 32), 60, 1)
	f.Add(r.Payload, r.Destination)
	f.Fuzz(func(t *testing.T, payload, dest []byte) {
		e := gossip.Envelope{Kind: schemas.Envelope_Kind_receipt, Payload: payload, Destination: dest}
		k, err := gossip.ReceiptSecret(e)
		if err != nil {
			return
		}
		tag := gossip.ReceiptTag(k)
		if string(tag[:]) != string(dest) {
			t.Fatal("accepted a receipt whose secret does not match")
		}
	})
}

func TestReceiptTagMatchesWhatSendersSeal(t *testing.T) {
	// Relays compute gossip.ReceiptTag; senders put e2e.ReceiptTagOf in
	// every DM. If they ever differ, receipts silently delete nothing.
	for range 8 {
		var k [32]byte
		rand.Read(k[:])
		if gossip.ReceiptTag(k[:]) != e2e.ReceiptTagOf(k) {
			t.Fatal("gossip.ReceiptTag and e2e.ReceiptTagOf disagree")
		}
	}
}

func TestForgedAndStaleDescriptorsRefused(t *testing.T) {
	clock := newClock()
	n := newTNode(t, clock)
	verify := func(signed []byte) (identity.Fingerprint, uint64, error) {
		d, err := descriptor.Verify(signed)
		return d.FP, d.Seq, err
	}
	n.eng.o.VerifyDescriptor = verify
	id, _ := identity.NewNode()
	mk := func(seq uint64) gossip.Envelope {
		b, err := descriptor.Sign(id, []string{"10.0.0.1:7443"}, "qpq", seq, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		e, err := gossip.NewSignedEnvelope(schemas.Envelope_Kind_descriptor, id.Fingerprint(), b, 3600, 4)
		if err != nil {
			t.Fatal(err)
		}
		return e
	}
	if added, err := n.eng.Accept(mk(2), Source{Client: "c"}); err != nil || !added {
		t.Fatalf("descriptor seq 2: %v %v", added, err)
	}
	if added, err := n.eng.Accept(mk(1), Source{Client: "c"}); err != nil || added {
		t.Fatalf("older descriptor stored: %v %v", added, err)
	}
	// Addressed to someone else: forged.
	other, _ := identity.NewNode()
	e := mk(3)
	e.Destination = append([]byte(nil), other.Fingerprint().String()[:32]...)
	e.ID = gossip.ComputeID(e.Kind, e.Destination, nil, e.Payload)
	if _, err := n.eng.Accept(e, Source{Client: "c"}); !errors.Is(err, ErrForged) {
		t.Fatalf("misaddressed descriptor: %v", err)
	}
	// Truncated record inside a well-formed envelope.
	e = mk(4)
	e.Payload[10] ^= 0xff
	e.ID = gossip.ComputeID(e.Kind, e.Destination, nil, e.Payload)
	if _, err := n.eng.Accept(e, Source{Client: "c"}); !errors.Is(err, ErrForged) {
		t.Fatalf("damaged descriptor: %v", err)
	}
	// A newer one replaces the old.
	if added, err := n.eng.Accept(mk(5), Source{Client: "c"}); err != nil || !added {
		t.Fatalf("descriptor seq 5: %v %v", added, err)
	}
	fp := id.Fingerprint()
	held, _ := n.eng.held(fp[:], schemas.Envelope_Kind_descriptor)
	if len(held) != 1 {
		t.Fatalf("%d descriptors held for one node, want the newest only", len(held))
	}
}
