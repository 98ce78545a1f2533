package link

import (
	"context"
	"crypto/tls"
	"errors"
	"math"
	"net"
	"strings"
	"testing"
	"time"

	"capnproto.org/go/capnp/v3"
	"github.com/quic-go/quic-go"

	"github.com/quicproquo/qpq/mesh/identity"
	"github.com/quicproquo/qpq/schemas"

	"github.com/quicproquo/qpq/mesh/testkit"
)

// node is one side of a test link on real loopback QUIC.
type node struct {
	id *identity.Node
	tr *Transport
}

func newNode(t testing.TB) *node {
	t.Helper()
	id, err := identity.NewNode()
	if err != nil {
		t.Fatal(err)
	}
	tr, err := Listen("127.0.0.1:0", id)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tr.Close() })
	return &node{id: id, tr: tr}
}

func (n *node) bootstrap() capnp.Client {
	return capnp.Client(schemas.MeshPeer_ServerToClient(&PeerServer{Local: LocalHello("test", "qpq")}))
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// linkPair dials b from a and establishes both ends.
func linkPair(t *testing.T, a, b *node) (*Link, *Link) {
	t.Helper()
	ctx := ctxT(t)
	type res struct {
		l   *Link
		err error
	}
	accepted := make(chan res, 1)
	go func() {
		c, err := b.tr.Accept(ctx)
		if err != nil {
			accepted <- res{nil, err}
			return
		}
		l, err := Establish(ctx, c, false, b.bootstrap(), LocalHello("test", "qpq"), nil)
		accepted <- res{l, err}
	}()
	c, err := a.tr.Dial(ctx, b.tr.Addr().String(), b.id.Fingerprint(), ALPNPeer)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	la, err := Establish(ctx, c, true, a.bootstrap(), LocalHello("test", "qpq"), nil)
	if err != nil {
		t.Fatalf("establish outbound: %v", err)
	}
	r := <-accepted
	if r.err != nil {
		t.Fatalf("establish inbound: %v", r.err)
	}
	t.Cleanup(func() { la.Close(CodeClosing, "test done"); r.l.Close(CodeClosing, "test done") })
	return la, r.l
}

func TestLinkUpBothSidesKnowEachOther(t *testing.T) {
	testkit.LeakCheck(t)
	a, b := newNode(t), newNode(t)
	la, lb := linkPair(t, a, b)
	if la.Peer() != b.id.Fingerprint() || lb.Peer() != a.id.Fingerprint() {
		t.Fatalf("peers: a sees %s (want %s), b sees %s (want %s)", la.Peer(), b.id.Fingerprint(), lb.Peer(), a.id.Fingerprint())
	}
	if !la.Outbound() || lb.Outbound() {
		t.Fatalf("outbound flags: a %v b %v", la.Outbound(), lb.Outbound())
	}
	if err := la.Probe(ctxT(t)); err != nil {
		t.Fatalf("probe a->b: %v", err)
	}
	if err := lb.Probe(ctxT(t)); err != nil {
		t.Fatalf("probe b->a: %v", err)
	}
	if la.PeerHello().Domain != "qpq" || la.PeerHello().Version != ProtocolVersion {
		t.Fatalf("hello: %+v", la.PeerHello())
	}
}

func TestDialWrongFingerprintRefused(t *testing.T) {
	testkit.LeakCheck(t)
	a, b, other := newNode(t), newNode(t), newNode(t)
	ctx := ctxT(t)
	go func() { // the listener keeps accepting; the refused dial must not hurt it
		for {
			c, err := b.tr.Accept(ctx)
			if err != nil {
				return
			}
			go Establish(ctx, c, false, b.bootstrap(), LocalHello("test", "qpq"), nil)
		}
	}()
	_, err := a.tr.Dial(ctx, b.tr.Addr().String(), other.id.Fingerprint(), ALPNPeer)
	if !errors.Is(err, ErrFingerprintMismatch) {
		t.Fatalf("dial with wrong pin: got %v, want %v", err, ErrFingerprintMismatch)
	}
	// b still serves a correct dialler.
	c, err := a.tr.Dial(ctx, b.tr.Addr().String(), b.id.Fingerprint(), ALPNPeer)
	if err != nil {
		t.Fatalf("dial with right pin after a refused one: %v", err)
	}
	l, err := Establish(ctx, c, true, a.bootstrap(), LocalHello("test", "qpq"), nil)
	if err != nil {
		t.Fatalf("establish after a refused dial: %v", err)
	}
	l.Close(CodeClosing, "done")
}

func TestNoClientCertificateRefused(t *testing.T) {
	testkit.LeakCheck(t)
	b := newNode(t)
	ctx := ctxT(t)
	serverErr := make(chan error, 1)
	go func() {
		c, err := b.tr.Accept(ctx)
		if err != nil {
			serverErr <- err
			return
		}
		_, err = Establish(ctx, c, false, b.bootstrap(), LocalHello("test", "qpq"), nil)
		serverErr <- err
	}()
	// A dialler with no identity presents no certificate.
	d, err := NewDialer("127.0.0.1:0", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	c, err := d.Dial(ctx, b.tr.Addr().String(), b.id.Fingerprint(), ALPNPeer)
	if err == nil {
		// TLS 1.3 checks the client certificate after the client's side of
		// the handshake: the refusal shows up at the first RPC.
		_, err = Establish(ctx, c, true, capnp.Client{}, LocalHello("test", "qpq"), nil)
	}
	if err == nil {
		t.Fatal("a dialler without a certificate got a link")
	}
	select {
	case err := <-serverErr:
		if err == nil {
			t.Fatal("listener established a link with a peer that has no certificate")
		}
	case <-time.After(100 * time.Millisecond):
		// quic-go dropped the connection before Accept returned it: refused.
	}
}

func TestOtherALPNRefused(t *testing.T) {
	testkit.LeakCheck(t)
	b := newNode(t)
	ctx := ctxT(t)
	udp, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer udp.Close()
	tr := &quic.Transport{Conn: udp}
	defer tr.Close()
	conf := &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"h3"}, MinVersion: tls.VersionTLS13}
	_, err = tr.Dial(ctx, b.tr.Addr(), conf, quicConfig())
	if err == nil {
		t.Fatal("a client offering ALPN h3 was accepted")
	}
	var te *quic.TransportError
	if !errors.As(err, &te) {
		t.Fatalf("want a QUIC transport error (no_application_protocol), got %v", err)
	}
}

func TestClientALPNServesNode(t *testing.T) {
	testkit.LeakCheck(t)
	b := newNode(t)
	ctx := ctxT(t)
	go func() {
		c, err := b.tr.Accept(ctx)
		if err != nil {
			return
		}
		rc, err := ServeStream(ctx, c, capnp.Client(schemas.Node_ServerToClient(healthOnly{})), nil)
		if err == nil {
			<-rc.Done()
		}
	}()
	d, err := NewDialer("127.0.0.1:0", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	c, err := d.Dial(ctx, b.tr.Addr().String(), b.id.Fingerprint(), ALPNClient)
	if err != nil {
		t.Fatalf("client dial: %v", err)
	}
	rc, boot, err := OpenStream(ctx, c, capnp.Client{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	n := schemas.Node(boot)
	defer n.Release()
	fut, release := n.Health(ctx, nil)
	defer release()
	res, err := fut.Struct()
	if err != nil {
		t.Fatalf("health over ALPN capnp: %v", err)
	}
	h, _ := res.Health()
	if h.Links() != 7 {
		t.Fatalf("health links = %d, want 7", h.Links())
	}
}

type healthOnly struct{}

func (healthOnly) Hello(ctx context.Context, call schemas.Node_hello) error { return nil }
func (healthOnly) Health(ctx context.Context, call schemas.Node_health) error {
	res, err := call.AllocResults()
	if err != nil {
		return err
	}
	h, err := res.NewHealth()
	if err != nil {
		return err
	}
	h.SetLinks(7)
	return nil
}

func TestIncompatibleVersionRefused(t *testing.T) {
	testkit.LeakCheck(t)
	local := LocalHello("a", "qpq")
	if _, err := Negotiate(local, Hello{Version: ProtocolVersion + 5, MinVersion: ProtocolVersion + 1}); !errors.Is(err, ErrIncompatible) {
		t.Fatalf("newer-only peer: %v", err)
	}
	if v, err := Negotiate(local, Hello{Version: ProtocolVersion + 5, MinVersion: 1}); err != nil || v != ProtocolVersion {
		t.Fatalf("newer overlapping peer: v=%d err=%v", v, err)
	}
	if v, err := Negotiate(local, Hello{Version: ProtocolVersion - 1, MinVersion: 1}); err != nil || v != ProtocolVersion-1 {
		t.Fatalf("older overlapping peer: v=%d err=%v", v, err)
	}
	if _, err := Negotiate(local, Hello{Version: 1, MinVersion: 2}); !errors.Is(err, ErrIncompatible) {
		t.Fatalf("inverted range: %v", err)
	}
}

var errTestOnly = errors.New("not in this test")

func (healthOnly) Enqueue(context.Context, schemas.Node_enqueue) error           { return errTestOnly }
func (healthOnly) Challenge(context.Context, schemas.Node_challenge) error       { return errTestOnly }
func (healthOnly) Authenticate(context.Context, schemas.Node_authenticate) error { return errTestOnly }
func (healthOnly) PublishBundle(context.Context, schemas.Node_publishBundle) error {
	return errTestOnly
}
func (healthOnly) LookupBundle(context.Context, schemas.Node_lookupBundle) error { return errTestOnly }
func (healthOnly) ChannelFetch(context.Context, schemas.Node_channelFetch) error { return errTestOnly }
func (healthOnly) Receipts(context.Context, schemas.Node_receipts) error         { return errTestOnly }
func (healthOnly) SendOnion(context.Context, schemas.Node_sendOnion) error       { return errTestOnly }
func (healthOnly) Descriptors(context.Context, schemas.Node_descriptors) error   { return errTestOnly }

// A hello says its decoy rate and the other side reads it back; a rate
// that is not one (negative, NaN, absurd) is refused naming the field.
func TestHelloCarriesTheDecoyRate(t *testing.T) {
	for _, c := range []struct {
		rate float64
		ok   bool
	}{{0, true}, {2.5, true}, {-1, false}, {math.NaN(), false}, {1e6, false}} {
		_, seg, _ := capnp.NewMessage(capnp.SingleSegment(nil))
		h, _ := schemas.NewRootHello(seg)
		v := LocalHello("a", "qpq")
		v.DecoyRate = c.rate
		if err := WriteHello(h, v); err != nil {
			t.Fatal(err)
		}
		got, err := ReadHello(h)
		switch {
		case c.ok && (err != nil || got.DecoyRate != c.rate):
			t.Errorf("rate %v: read back %v, %v", c.rate, got.DecoyRate, err)
		case !c.ok && (err == nil || !strings.Contains(err.Error(), "decoyRate")):
			t.Errorf("rate %v: taken (%v)", c.rate, err)
		}
	}
}
