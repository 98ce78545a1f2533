package wire

import (
	"context"
	"errors"
	"strings"
	"testing"

	"capnproto.org/go/capnp/v3"
	"capnproto.org/go/capnp/v3/server"

	"github.com/quicproquo/qpq/gossip"
	"github.com/quicproquo/qpq/gossip/relay"
	"github.com/quicproquo/qpq/mesh/identity"
	"github.com/quicproquo/qpq/mesh/link"
	"github.com/quicproquo/qpq/schemas"

	"github.com/quicproquo/qpq/mesh/testkit"
)

// rawRaise calls raise with entries written as given, bypassing the
// checks WriteRaises makes, as a faulty or hostile peer could.
func rawRaise(ctx context.Context, peer schemas.MeshPeer, ids [][]byte) error {
	fut, release := peer.Raise(ctx, func(p schemas.MeshPeer_raise_Params) error {
		list, err := p.NewRaises(int32(len(ids)))
		if err != nil {
			return err
		}
		for i, id := range ids {
			if err := list.At(i).SetId(id); err != nil {
				return err
			}
			list.At(i).SetHopLimit(3)
		}
		return nil
	})
	defer release()
	_, err := fut.Struct()
	return err
}

func TestRaiseRoundTrip(t *testing.T) {
	testkit.LeakCheck(t)
	h := &recHandler{}
	peer := NewPeer(serve(t, h, ServerOptions{}), link.ProtocolVersion)
	want := []relay.HopRaise{{ID: gossip.ID{1}, HopLimit: 2}, {ID: gossip.ID{2, 3}, HopLimit: 6}}
	if err := peer.Raise(ctxT(t), want); err != nil {
		t.Fatalf("raise: %v", err)
	}
	got := h.raises
	if len(got) != 1 || len(got[0]) != 2 || got[0][0] != want[0] || got[0][1] != want[1] {
		t.Fatalf("handler got %v, want [%v]", got, want)
	}
	if err := peer.Raise(ctxT(t), nil); err != nil {
		t.Fatalf("empty raise: %v", err)
	}
}

func TestRaiseMalformedRefused(t *testing.T) {
	testkit.LeakCheck(t)
	h := &recHandler{}
	remote := serve(t, h, ServerOptions{})
	peer := NewPeer(remote, link.ProtocolVersion)
	id := make([]byte, gossip.IDLen)
	tooMany := make([][]byte, relay.MaxRaises+1)
	for i := range tooMany {
		tooMany[i] = id
	}
	for _, c := range []struct {
		name string
		ids  [][]byte
		msg  string
	}{
		{"short id", [][]byte{id, id[:31]}, "entry 1: id is 31 bytes, want 32"},
		{"long id", [][]byte{append(id, 0)}, "entry 0: id is 33 bytes, want 32"},
		{"empty id", [][]byte{nil}, "entry 0: id is 0 bytes, want 32"},
		{"too many", tooMany, "1025 entries, at most 1024"},
	} {
		err := rawRaise(ctxT(t), remote, c.ids)
		if err == nil || !strings.Contains(err.Error(), "malformed raise") || !strings.Contains(err.Error(), c.msg) {
			t.Errorf("%s: got %v, want an error saying %q", c.name, err, c.msg)
		}
	}
	if len(h.raises) != 0 {
		t.Errorf("the handler was called with %d malformed raises", len(h.raises))
	}
	// The sender refuses an over-long list before it goes out.
	if err := peer.Raise(ctxT(t), make([]relay.HopRaise, relay.MaxRaises+1)); !errors.Is(err, ErrBadRaise) {
		t.Errorf("sending %d raises: got %v, want ErrBadRaise", relay.MaxRaises+1, err)
	}
	// Exactly MaxRaises is fine.
	if err := peer.Raise(ctxT(t), make([]relay.HopRaise, relay.MaxRaises)); err != nil || len(h.raises) != 1 {
		t.Errorf("sending %d raises: %v", relay.MaxRaises, err)
	}
}

func TestRaiseNotServedOverALink(t *testing.T) {
	testkit.LeakCheck(t)
	// A node without a Handler answers as one that predates raise:
	// unimplemented, which the caller sees as ErrRaiseUnsupported, and the
	// link stays up.
	boot := func() capnp.Client {
		return NewServer(identity0, ServerOptions{Local: link.LocalHello("test", "qpq")}).Client()
	}
	la, _ := linkPair(t, newID(t), newID(t), boot, boot)
	err := NewPeer(la.Remote(), la.Version()).Raise(ctxT(t), []relay.HopRaise{{ID: gossip.ID{1}, HopLimit: 1}})
	if !errors.Is(err, relay.ErrRaiseUnsupported) {
		t.Fatalf("raise to a node that does not serve it: got %v, want ErrRaiseUnsupported", err)
	}
	if err := la.Probe(ctxT(t)); err != nil {
		t.Fatalf("link after an unserved raise: %v", err)
	}
}

func TestRaiseToANodeThatPredatesIt(t *testing.T) {
	testkit.LeakCheck(t)
	// A node built before raise existed has no method @4 at all: its
	// server table ends at summary. The call comes back unimplemented,
	// which callers see as ErrRaiseUnsupported, and the other methods
	// still work.
	impl := NewServer(identity0, ServerOptions{Local: link.LocalHello("old", "qpq"), Handler: &recHandler{}})
	methods := schemas.MeshPeer_Methods(nil, impl)
	var old []server.Method
	for _, m := range methods {
		if m.MethodID < 4 {
			old = append(old, m)
		}
	}
	if len(old) != 4 {
		t.Fatalf("expected the methods before raise (@0-@3) to remain; have %d of %d", len(old), len(methods))
	}
	remote := schemas.MeshPeer(capnp.NewClient(server.New(old, impl, nil)))
	defer remote.Release()
	err := NewPeer(remote, link.ProtocolVersion).Raise(ctxT(t), []relay.HopRaise{{ID: gossip.ID{1}, HopLimit: 1}})
	if !errors.Is(err, relay.ErrRaiseUnsupported) {
		t.Fatalf("raise to a node without the method: got %v, want ErrRaiseUnsupported", err)
	}
	fut, release := remote.Health(ctxT(t), nil)
	defer release()
	if _, err := fut.Struct(); err != nil {
		t.Fatalf("health on the old node after the raise: %v", err)
	}
}

// identity0 is the neighbour a test server believes it serves.
var identity0 = identity.Fingerprint{9}
