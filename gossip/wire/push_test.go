package wire

import (
	"bytes"
	"strings"
	"testing"

	"github.com/quicproquo/qpq/gossip"
	"github.com/quicproquo/qpq/gossip/relay"
	"github.com/quicproquo/qpq/mesh/link"
	"github.com/quicproquo/qpq/schemas"

	"github.com/quicproquo/qpq/gossip/gossiptest"

	"github.com/quicproquo/qpq/mesh/testkit"
)

func TestPushAndSummaryRoundTrip(t *testing.T) {
	testkit.LeakCheck(t)
	h := &recHandler{}
	peer := NewPeer(serve(t, h, ServerOptions{}), link.ProtocolVersion)
	e := gossiptest.Hops(gossiptest.DM(nil, nil, 60, 1), 3)
	r, err := peer.Push(ctxT(t), []gossip.Envelope{e})
	if n := r.Accepted; err != nil || n != 1 {
		t.Fatalf("push: %d %v", n, err)
	}
	if len(h.accepted) != 1 || h.accepted[0].ID != e.ID {
		t.Fatalf("handler got %v, want the pushed envelope", h.accepted)
	}
	s := relay.Summary{Filter: []byte{1, 2, 3}, Key: []byte{4, 5}, Count: 9}
	if err := peer.Summary(ctxT(t), s); err != nil {
		t.Fatalf("summary: %v", err)
	}
	if len(h.summaries) != 1 || !bytes.Equal(h.summaries[0].Filter, s.Filter) || !bytes.Equal(h.summaries[0].Key, s.Key) || h.summaries[0].Count != 9 {
		t.Fatalf("handler got %v, want %v", h.summaries, s)
	}
}

func TestPushOverTheBatchLimitRefused(t *testing.T) {
	testkit.LeakCheck(t)
	h := &recHandler{}
	remote := serve(t, h, ServerOptions{})
	envs := make([]gossip.Envelope, relay.MaxPush+1)
	for i := range envs {
		envs[i] = gossiptest.Hops(gossiptest.DM(nil, nil, 60, 1), 3)
	}
	// The sender refuses before sending, and the receiver refuses a peer
	// that does not.
	if _, err := NewPeer(remote, link.ProtocolVersion).Push(ctxT(t), envs); err == nil || !strings.Contains(err.Error(), "at most 256") {
		t.Errorf("sending %d envelopes: got %v, want refused", len(envs), err)
	}
	fut, release := remote.Push(ctxT(t), func(ps schemas.MeshPeer_push_Params) error {
		return gossip.ToCapnpList(envs, ps.NewEnvelopes)
	})
	defer release()
	if _, err := fut.Struct(); err == nil || !strings.Contains(err.Error(), "at most 256") {
		t.Errorf("a raw push of %d envelopes: got %v, want refused", len(envs), err)
	}
	if len(h.accepted) != 0 {
		t.Errorf("the handler got %d envelopes of a refused push", len(h.accepted))
	}
}
