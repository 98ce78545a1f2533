package wire

import (
	"bytes"
	"context"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"capnproto.org/go/capnp/v3"

	"github.com/quicproquo/qpq/gossip"
	"github.com/quicproquo/qpq/gossip/gossiptest"
	"github.com/quicproquo/qpq/gossip/relay"
	"github.com/quicproquo/qpq/gossip/store"
	"github.com/quicproquo/qpq/mesh/identity"
	"github.com/quicproquo/qpq/mesh/link"
	"github.com/quicproquo/qpq/mesh/testkit"
)

// sumHandler keeps copies of the summaries a Server hands it and
// answers with err.
type sumHandler struct {
	recHandler
	got []relay.Summary
	err error
}

func (h *sumHandler) HandleSummary(from identity.Fingerprint, s relay.Summary) error {
	for _, b := range []*[]byte{&s.Filter, &s.Key, &s.Start, &s.End, &s.Digest} {
		if *b != nil {
			*b = bytes.Clone(*b) // they point into the message
		}
	}
	h.got = append(h.got, s)
	return h.err
}

func TestSummaryRangeCrossesTheWire(t *testing.T) {
	// A partial summary arrives with its bounds and digest, one open at the end with
	// none there, and a whole-store summary with neither, as a version-1
	// node's does; the engine's refusal comes back to the caller.
	h := &sumHandler{}
	peer := NewPeer(serve(t, h, ServerOptions{}), 2)
	lo, hi := bytes.Repeat([]byte{0x11}, gossip.IDLen), bytes.Repeat([]byte{0xee}, gossip.IDLen)
	sent := []relay.Summary{
		{Filter: []byte{1, 2}, Key: []byte{3}, Count: 9, Start: lo, End: hi, Digest: hi},
		{Filter: []byte{1, 2}, Key: []byte{3}, Count: 8, Start: hi},
		{Filter: []byte{1, 2}, Key: []byte{3}, Count: 7},
	}
	for _, s := range sent {
		if err := peer.Summary(ctxT(t), s); err != nil {
			t.Fatal(err)
		}
	}
	if len(h.got) != len(sent) {
		t.Fatalf("%d summaries arrived, want %d", len(h.got), len(sent))
	}
	for i, s := range sent {
		g := h.got[i]
		if g.Count != s.Count || !bytes.Equal(g.Digest, s.Digest) || !bytes.Equal(g.Start, s.Start) || !bytes.Equal(g.End, s.End) || (s.Start == nil) != (g.Start == nil) || (s.End == nil) != (g.End == nil) {
			t.Errorf("summary %d arrived as count %d start %x end %x, want %d %x %x", i, g.Count, g.Start, g.End, s.Count, s.Start, s.End)
		}
	}
	h.err = relay.ErrBadSummary
	if err := peer.Summary(ctxT(t), sent[0]); err == nil || !strings.Contains(err.Error(), relay.ErrBadSummary.Error()) {
		t.Errorf("a refused summary: got %v, want an error saying %q", err, relay.ErrBadSummary)
	}
}

func TestPartialSummariesOverQUIC(t *testing.T) {
	testkit.LeakCheck(t)
	// Version-2 neighbours over real QUIC: b's round is several partial
	// summaries (16 ids each, or a few more) and a, checking each against its ids in the
	// range, pushes b the 30 envelopes it lacks, spread over the ranges.
	a := newWNode(t)
	st, err := store.Open(filepath.Join(t.TempDir(), "store.db"), store.Options{MaxBytes: 8 << 20, MaxTTL: 7 * 24 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	b := &wnode{id: newID(t), st: st, eng: relay.New(relay.Options{Store: st, SummaryPartIDs: 16})}
	t.Cleanup(func() { b.eng.Close(); b.st.Close() })
	var missing []gossip.Envelope
	for i := range 130 {
		e := gossiptest.DM(nil, nil, 3600, 1)
		for _, n := range []*wnode{a, b} {
			if n == b && i < 30 {
				missing = append(missing, e)
				continue
			}
			if added, err := n.st.Put(e, "c"); err != nil || !added {
				t.Fatalf("put: %v %v", added, err)
			}
		}
	}
	// Every envelope a pushes b is counted: a summary whose bounds were
	// lost on the way reads as a whole store of 16 ids, and a would push
	// b nearly everything. (Filters of 16 ids are sized for 64, so a
	// false positive hiding a missing id is a few in a million.)
	counted := &countingHandler{Handler: b.eng}
	bootB := func() capnp.Client {
		return NewServer(a.id.Fingerprint(), ServerOptions{Local: link.LocalHello("test", "qpq"), Handler: counted}).Client()
	}
	la, lb := linkPair(t, a.id, b.id, a.serverFor(b), bootB)
	defer a.eng.AddPeer(b.id.Fingerprint(), NewPeer(la.Remote(), 2))()
	defer b.eng.AddPeer(a.id.Fingerprint(), NewPeer(lb.Remote(), 2))()
	if err := b.eng.SendSummary(context.Background(), a.id.Fingerprint()); err != nil {
		t.Fatal(err)
	}
	for _, e := range missing {
		waitStored(t, b, e.ID)
	}
	if n := counted.accepts.Load(); n != int64(len(missing)) {
		t.Errorf("a pushed b %d envelopes, want the %d it lacked", n, len(missing))
	}
}

// countingHandler counts the envelopes pushed to its Handler.
type countingHandler struct {
	Handler
	accepts atomic.Int64
}

func (c *countingHandler) AcceptPush(from identity.Fingerprint, envs []gossip.Envelope, flow bool) (relay.PushResult, error) {
	c.accepts.Add(int64(len(envs)))
	return c.Handler.AcceptPush(from, envs, flow)
}
