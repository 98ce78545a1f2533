package wire

import (
	"errors"
	"sync"
	"testing"

	"capnproto.org/go/capnp/v3"
	"capnproto.org/go/capnp/v3/server"

	"github.com/quicproquo/qpq/gossip"
	"github.com/quicproquo/qpq/gossip/gossiptest"
	"github.com/quicproquo/qpq/mesh/identity"
	"github.com/quicproquo/qpq/mesh/link"
	"github.com/quicproquo/qpq/mesh/testkit"
	"github.com/quicproquo/qpq/schemas"
)

// recBoxes records places and answers pulls from what was placed, two
// envelopes a page.
type recBoxes struct {
	mu     sync.Mutex // the server's goroutine writes, the test reads
	placed []gossip.Envelope
	reqs   []PullRequest
}

func (b *recBoxes) Place(from identity.Fingerprint, envs []gossip.Envelope) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.placed = append(b.placed, envs...)
	return len(envs), nil
}

func (b *recBoxes) Pull(from identity.Fingerprint, req PullRequest) ([]gossip.Envelope, *gossip.ID, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.reqs = append(b.reqs, req)
	start := 0
	if req.After != nil {
		for i, e := range b.placed {
			if e.ID == *req.After {
				start = i + 1
			}
		}
	}
	end := min(start+2, len(b.placed))
	out := b.placed[start:end]
	if end == len(b.placed) {
		return out, nil, nil
	}
	last := out[len(out)-1].ID
	return out, &last, nil
}

// Place carries DMs whole over a real link, and pull pages through them
// with the cursor each answer gives, bucket and bits as asked.
func TestPlaceAndPullOverALink(t *testing.T) {
	testkit.LeakCheck(t)
	boxes := &recBoxes{}
	bootB := func() capnp.Client {
		return NewServer(identity0, ServerOptions{Local: link.LocalHello("test", "qpq"), Mailboxes: boxes}).Client()
	}
	bootA := func() capnp.Client {
		return NewServer(identity0, ServerOptions{Local: link.LocalHello("test", "qpq")}).Client()
	}
	la, _ := linkPair(t, newID(t), newID(t), bootA, bootB)
	p := NewPeer(la.Remote(), la.Version())
	var sent []gossip.Envelope
	for range 5 {
		sent = append(sent, gossiptest.DM(nil, nil, 3600, 1))
	}
	if n, err := p.Place(ctxT(t), sent); err != nil || n != 5 {
		t.Fatalf("place: %d, %v", n, err)
	}
	var got []gossip.Envelope
	var after *gossip.ID
	for pages := 0; ; pages++ {
		if pages > 5 {
			t.Fatal("pull never ended")
		}
		envs, next, err := p.Pull(ctxT(t), PullRequest{Bucket: 7, Bits: 8, After: after, Limit: 2})
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, envs...)
		if next == nil {
			break
		}
		after = next
	}
	if len(got) != len(sent) {
		t.Fatalf("pulled %d envelopes, placed %d", len(got), len(sent))
	}
	for i := range sent {
		if got[i].ID != sent[i].ID || string(got[i].Payload) != string(sent[i].Payload) {
			t.Fatalf("envelope %d differs after place and pull", i)
		}
	}
	boxes.mu.Lock()
	first := boxes.reqs[0]
	boxes.mu.Unlock()
	if r := first; r.Bucket != 7 || r.Bits != 8 || r.After != nil || r.Limit != 2 {
		t.Fatalf("first pull arrived as %+v", r)
	}
	// A bucket that does not fit its bits is refused before the handler.
	if _, _, err := p.Pull(ctxT(t), PullRequest{Bucket: 256, Bits: 8}); err == nil {
		t.Fatal("a pull of bucket 256 in 8 bits was answered")
	}
	boxes.mu.Lock()
	defer boxes.mu.Unlock()
	if len(boxes.reqs) != 3 {
		t.Fatalf("%d pulls reached the handler, want 3", len(boxes.reqs))
	}
}

// A node without placement (no Mailboxes), or one built before place and
// pull existed (no methods @5, @6), answers unimplemented: the caller sees
// ErrMailboxUnsupported and the link stays up.
func TestMailboxCallsToANodeWithoutThem(t *testing.T) {
	testkit.LeakCheck(t)
	boot := func() capnp.Client {
		return NewServer(identity0, ServerOptions{Local: link.LocalHello("test", "qpq"), Handler: &recHandler{}}).Client()
	}
	la, _ := linkPair(t, newID(t), newID(t), boot, boot)
	p := NewPeer(la.Remote(), la.Version())
	if _, err := p.Place(ctxT(t), []gossip.Envelope{gossiptest.DM(nil, nil, 3600, 1)}); !errors.Is(err, ErrMailboxUnsupported) {
		t.Fatalf("place to a node without mailboxes: %v", err)
	}
	if _, _, err := p.Pull(ctxT(t), PullRequest{Bucket: 1, Bits: 8}); !errors.Is(err, ErrMailboxUnsupported) {
		t.Fatalf("pull from a node without mailboxes: %v", err)
	}
	if err := la.Probe(ctxT(t)); err != nil {
		t.Fatalf("link after unserved calls: %v", err)
	}

	impl := NewServer(identity0, ServerOptions{Local: link.LocalHello("old", "qpq"), Handler: &recHandler{}, Mailboxes: &recBoxes{}})
	var old []server.Method
	for _, m := range schemas.MeshPeer_Methods(nil, impl) {
		if m.MethodID < 5 {
			old = append(old, m)
		}
	}
	remote := schemas.MeshPeer(capnp.NewClient(server.New(old, impl, nil)))
	defer remote.Release()
	if _, err := NewPeer(remote, link.ProtocolVersion).Place(ctxT(t), nil); !errors.Is(err, ErrMailboxUnsupported) {
		t.Fatalf("place to a node that predates it: %v", err)
	}
}

// Over a link that agreed on a version before placement, place and pull
// are not sent at all: the node at the other end is older.
func TestMailboxNeedsVersion3(t *testing.T) {
	boxes := &recBoxes{}
	remote := serve(t, &recHandler{}, ServerOptions{Mailboxes: boxes})
	p := NewPeer(remote, MailboxVersion-1)
	if _, err := p.Place(ctxT(t), nil); !errors.Is(err, ErrMailboxUnsupported) {
		t.Errorf("place over a version %d link: %v", MailboxVersion-1, err)
	}
	if _, _, err := p.Pull(ctxT(t), PullRequest{Bits: 8}); !errors.Is(err, ErrMailboxUnsupported) {
		t.Errorf("pull over a version %d link: %v", MailboxVersion-1, err)
	}
	boxes.mu.Lock()
	if len(boxes.placed) != 0 || len(boxes.reqs) != 0 {
		t.Errorf("the older link's node was asked anyway: %d placed, %d pulls", len(boxes.placed), len(boxes.reqs))
	}
	boxes.mu.Unlock()
	if link.ProtocolVersion < MailboxVersion {
		t.Errorf("this build speaks protocol %d, below placement's %d", link.ProtocolVersion, MailboxVersion)
	}
}
