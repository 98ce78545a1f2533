package wire

import (
	"bytes"
	"strings"
	"testing"

	"github.com/quicproquo/qpq/gossip"
	"github.com/quicproquo/qpq/gossip/relay"
	"github.com/quicproquo/qpq/mesh/identity"
)

// sumHandler keeps copies of the summaries a Server hands it and
// answers with err.
type sumHandler struct {
	recHandler
	got []relay.Summary
	err error
}

func (h *sumHandler) HandleSummary(from identity.Fingerprint, s relay.Summary) error {
	for _, b := range []*[]byte{&s.Filter, &s.Key, &s.Start, &s.End} {
		if *b != nil {
			*b = bytes.Clone(*b) // they point into the message
		}
	}
	h.got = append(h.got, s)
	return h.err
}

func TestSummaryRangeCrossesTheWire(t *testing.T) {
	// A partial summary arrives with its bounds, one open at the end with
	// none there, and a whole-store summary with neither, as a version-1
	// node's does; the engine's refusal comes back to the caller.
	h := &sumHandler{}
	peer := NewPeer(serve(t, h, ServerOptions{}), 2)
	lo, hi := bytes.Repeat([]byte{0x11}, gossip.IDLen), bytes.Repeat([]byte{0xee}, gossip.IDLen)
	sent := []relay.Summary{
		{Filter: []byte{1, 2}, Key: []byte{3}, Count: 9, Start: lo, End: hi},
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
		if g.Count != s.Count || !bytes.Equal(g.Start, s.Start) || !bytes.Equal(g.End, s.End) || (s.Start == nil) != (g.Start == nil) || (s.End == nil) != (g.End == nil) {
			t.Errorf("summary %d arrived as count %d start %x end %x, want %d %x %x", i, g.Count, g.Start, g.End, s.Count, s.Start, s.End)
		}
	}
	h.err = relay.ErrBadSummary
	if err := peer.Summary(ctxT(t), sent[0]); err == nil || !strings.Contains(err.Error(), relay.ErrBadSummary.Error()) {
		t.Errorf("a refused summary: got %v, want an error saying %q", err, relay.ErrBadSummary)
	}
}
