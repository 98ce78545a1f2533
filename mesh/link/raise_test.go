package link

import (
	"context"
	"errors"
	"strings"
	"testing"

	"capnproto.org/go/capnp/v3"
	"capnproto.org/go/capnp/v3/server"

	"github.com/quicproquo/qpq/schemas"
)

// raiseServer is a MeshPeer whose RaiseHandler records what it is given.
func raiseServer(t *testing.T, got *[][]HopRaise) schemas.MeshPeer {
	t.Helper()
	c := schemas.MeshPeer_ServerToClient(&PeerServer{
		Local: LocalHello("test", "qpq"),
		RaiseHandler: func(ctx context.Context, raises []HopRaise) error {
			*got = append(*got, raises)
			return nil
		},
	})
	t.Cleanup(c.Release)
	return c
}

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
	var got [][]HopRaise
	peer := raiseServer(t, &got)
	want := []HopRaise{{ID: [32]byte{1}, HopLimit: 2}, {ID: [32]byte{2, 3}, HopLimit: 6}}
	if err := CallRaise(ctxT(t), peer, want); err != nil {
		t.Fatalf("raise: %v", err)
	}
	if len(got) != 1 || len(got[0]) != 2 || got[0][0] != want[0] || got[0][1] != want[1] {
		t.Fatalf("handler got %v, want [%v]", got, want)
	}
	if err := CallRaise(ctxT(t), peer, nil); err != nil {
		t.Fatalf("empty raise: %v", err)
	}
}

func TestRaiseMalformedRefused(t *testing.T) {
	var got [][]HopRaise
	peer := raiseServer(t, &got)
	id := make([]byte, RaiseIDLen)
	tooMany := make([][]byte, MaxRaises+1)
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
		err := rawRaise(ctxT(t), peer, c.ids)
		if err == nil || !strings.Contains(err.Error(), "malformed raise") || !strings.Contains(err.Error(), c.msg) {
			t.Errorf("%s: got %v, want an error saying %q", c.name, err, c.msg)
		}
	}
	if len(got) != 0 {
		t.Errorf("the handler was called with %d malformed raises", len(got))
	}
	// The sender refuses an over-long list before it goes out.
	if err := CallRaise(ctxT(t), peer, make([]HopRaise, MaxRaises+1)); !errors.Is(err, ErrBadRaise) {
		t.Errorf("sending %d raises: got %v, want ErrBadRaise", MaxRaises+1, err)
	}
	// Exactly MaxRaises is fine.
	if err := CallRaise(ctxT(t), peer, make([]HopRaise, MaxRaises)); err != nil || len(got) != 1 {
		t.Errorf("sending %d raises: %v", MaxRaises, err)
	}
}

func TestRaiseNotServedOverALink(t *testing.T) {
	// A node without a RaiseHandler answers as one that predates raise:
	// unimplemented, which the caller sees as ErrNotServed, and the link
	// stays up.
	a, b := newNode(t), newNode(t)
	la, _ := linkPair(t, a, b)
	err := la.Raise(ctxT(t), []HopRaise{{ID: [32]byte{1}, HopLimit: 1}})
	if !errors.Is(err, ErrNotServed) {
		t.Fatalf("raise to a node that does not serve it: got %v, want ErrNotServed", err)
	}
	if err := la.Probe(ctxT(t)); err != nil {
		t.Fatalf("link after an unserved raise: %v", err)
	}
}

func TestRaiseToANodeThatPredatesIt(t *testing.T) {
	// A node built before raise existed has no method @4 at all: its
	// server table ends at summary. The call comes back unimplemented,
	// which callers see as ErrNotServed, and the other methods still work.
	impl := &PeerServer{Local: LocalHello("old", "qpq")}
	methods := schemas.MeshPeer_Methods(nil, impl)
	var old []server.Method
	for _, m := range methods {
		if m.MethodID < 4 {
			old = append(old, m)
		}
	}
	if len(old) != len(methods)-1 {
		t.Fatalf("expected exactly one method (raise, @4) to remove; have %d of %d", len(old), len(methods))
	}
	peer := schemas.MeshPeer(capnp.NewClient(server.New(old, impl, nil)))
	defer peer.Release()
	err := CallRaise(ctxT(t), peer, []HopRaise{{ID: [32]byte{1}, HopLimit: 1}})
	if !errors.Is(err, ErrNotServed) {
		t.Fatalf("raise to a node without the method: got %v, want ErrNotServed", err)
	}
	fut, release := peer.Health(ctxT(t), nil)
	defer release()
	if _, err := fut.Struct(); err != nil {
		t.Fatalf("health on the old node after the raise: %v", err)
	}
}
