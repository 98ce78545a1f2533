package wire

import (
	"bytes"
	"context"
	"testing"
	"time"

	"capnproto.org/go/capnp/v3"

	"github.com/quicproquo/qpq/gossip"
	"github.com/quicproquo/qpq/gossip/relay"
	"github.com/quicproquo/qpq/mesh/identity"
	"github.com/quicproquo/qpq/mesh/link"
	"github.com/quicproquo/qpq/schemas"
)

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// recHandler records what a Server hands it.
type recHandler struct {
	raises    [][]relay.HopRaise
	summaries []relay.Summary
	accepted  []gossip.Envelope
	panicOn   string // a method that panics instead
}

func (h *recHandler) AcceptPush(from identity.Fingerprint, envs []gossip.Envelope, flow bool) (relay.PushResult, error) {
	if h.panicOn == "push" {
		panic("test panic in accept")
	}
	h.accepted = append(h.accepted, envs...)
	return relay.PushResult{Accepted: len(envs), Taken: len(envs)}, nil
}

func (h *recHandler) HandleSummary(from identity.Fingerprint, s relay.Summary) error {
	if h.panicOn == "summary" {
		var m map[string]int
		m["boom"]++ // a nil map write: a runtime panic, as a decoder bug would be
	}
	s.Filter, s.Key = bytes.Clone(s.Filter), bytes.Clone(s.Key) // they point into the message
	h.summaries = append(h.summaries, s)
	return nil
}

func (h *recHandler) HandleRaise(from identity.Fingerprint, raises []relay.HopRaise) error {
	if h.panicOn == "raise" {
		panic("test panic in raise")
	}
	h.raises = append(h.raises, raises)
	return nil
}

// serve returns a local MeshPeer client over a Server with handler h.
func serve(t *testing.T, h Handler, o ServerOptions) schemas.MeshPeer {
	t.Helper()
	o.Local = link.LocalHello("test", "qpq")
	o.Handler = h
	c := schemas.MeshPeer(NewServer(identity.Fingerprint{1}, o).Client())
	t.Cleanup(c.Release)
	return c
}

// linkPair links node a (dialling) to node b over real loopback QUIC;
// each offers the bootstrap its function makes.
func linkPair(t *testing.T, a, b *identity.Node, bootA, bootB func() capnp.Client) (*link.Link, *link.Link) {
	t.Helper()
	return linkPairHello(t, a, b, bootA, bootB, link.LocalHello("test", "qpq"), link.LocalHello("test", "qpq"))
}

// linkPairHello is linkPair with the hellos each side says (a node of an
// older protocol version, say).
func linkPairHello(t *testing.T, a, b *identity.Node, bootA, bootB func() capnp.Client, helloA, helloB link.Hello) (*link.Link, *link.Link) {
	t.Helper()
	ctx := ctxT(t)
	listen := func(id *identity.Node) *link.Transport {
		tr, err := link.Listen("127.0.0.1:0", id)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { tr.Close() })
		return tr
	}
	ta, tb := listen(a), listen(b)
	type res struct {
		l   *link.Link
		err error
	}
	accepted := make(chan res, 1)
	go func() {
		c, err := tb.Accept(ctx)
		if err != nil {
			accepted <- res{nil, err}
			return
		}
		l, err := link.Establish(ctx, c, false, bootB(), helloB, nil)
		accepted <- res{l, err}
	}()
	c, err := ta.Dial(ctx, tb.Addr().String(), b.Fingerprint(), link.ALPNPeer)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	la, err := link.Establish(ctx, c, true, bootA(), helloA, nil)
	if err != nil {
		t.Fatalf("establish outbound: %v", err)
	}
	r := <-accepted
	if r.err != nil {
		t.Fatalf("establish inbound: %v", r.err)
	}
	t.Cleanup(func() { la.Close(link.CodeClosing, "test done"); r.l.Close(link.CodeClosing, "test done") })
	return la, r.l
}

func newID(t *testing.T) *identity.Node {
	t.Helper()
	id, err := identity.NewNode()
	if err != nil {
		t.Fatal(err)
	}
	return id
}
