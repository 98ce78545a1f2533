package link

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"capnproto.org/go/capnp/v3"
	"capnproto.org/go/capnp/v3/rpc"
	"github.com/quic-go/quic-go"

	"github.com/quicproquo/qpq/mesh/identity"
	"github.com/quicproquo/qpq/schemas"
)

// Link is an authenticated node-to-node connection whose hello has been
// answered: both sides proved their keys and agreed on a version.
type Link struct {
	conn     *quic.Conn
	rpc      *rpc.Conn
	remote   schemas.MeshPeer
	fp       identity.Fingerprint
	outbound bool
	hello    Hello
	version  uint16
	since    time.Time

	closeOnce sync.Once
}

// Establish runs RPC over conn's first stream (the dialler opens it, the
// listener accepts it), offers bootstrap to the peer (Establish takes the
// reference) and calls hello on the peer's MeshPeer. On any error the
// connection is closed and the error says why.
func Establish(ctx context.Context, conn *quic.Conn, outbound bool, bootstrap capnp.Client, local Hello, log *slog.Logger) (*Link, error) {
	l, err := establish(ctx, conn, outbound, bootstrap, local, log)
	if err != nil {
		conn.CloseWithError(CodeRefused, truncate(err.Error(), 200))
		return nil, err
	}
	return l, nil
}

func establish(ctx context.Context, conn *quic.Conn, outbound bool, bootstrap capnp.Client, local Hello, log *slog.Logger) (*Link, error) {
	fp, err := PeerFingerprint(conn.ConnectionState().TLS)
	if err != nil {
		bootstrap.Release()
		return nil, err
	}
	var rc *rpc.Conn
	var remote capnp.Client
	if outbound {
		rc, remote, err = OpenStream(ctx, conn, bootstrap, log)
	} else {
		rc, err = ServeStream(ctx, conn, bootstrap, log)
		if err == nil {
			remote = rc.Bootstrap(ctx)
		}
	}
	if err != nil {
		return nil, err
	}
	l := &Link{conn: conn, rpc: rc, remote: schemas.MeshPeer(remote), fp: fp, outbound: outbound}
	theirs, err := l.callHello(ctx, local)
	if err != nil {
		l.closeRPC()
		// When the peer closed the connection, its reason (such as TLS's
		// "certificate required") says more than the RPC error does.
		if cause := context.Cause(conn.Context()); cause != nil {
			return nil, fmt.Errorf("hello to %s at %s: %w (connection closed: %v)", fp, conn.RemoteAddr(), err, cause)
		}
		return nil, fmt.Errorf("hello to %s at %s: %w", fp, conn.RemoteAddr(), err)
	}
	l.version, err = Negotiate(local, theirs)
	if err != nil {
		l.closeRPC()
		return nil, fmt.Errorf("hello to %s at %s: %w", fp, conn.RemoteAddr(), err)
	}
	l.hello = theirs
	l.since = time.Now()
	return l, nil
}

func (l *Link) callHello(ctx context.Context, local Hello) (Hello, error) {
	return CallHello(ctx, l.remote, local)
}

// CallHello says local to the peer behind remote and returns its answer,
// bounded (ReadHello). Links call it on connecting; qpq-bridge's links
// over libp2p call it the same way.
func CallHello(ctx context.Context, remote schemas.MeshPeer, local Hello) (Hello, error) {
	fut, release := remote.Hello(ctx, func(p schemas.MeshPeer_hello_Params) error {
		h, err := p.NewHello()
		if err != nil {
			return err
		}
		return WriteHello(h, local)
	})
	defer release()
	res, err := fut.Struct()
	if err != nil {
		return Hello{}, err
	}
	h, err := res.Hello()
	if err != nil {
		return Hello{}, err
	}
	return ReadHello(h)
}

// Bytes is what the link sent and received so far, in UDP payload bytes.
func (l *Link) Bytes() (sent, received uint64) {
	st := l.conn.ConnectionStats()
	return st.BytesSent, st.BytesReceived
}

// Cells reports whether the link carries cells: both sides agreed on
// CellVersion or later and on QUIC datagrams.
func (l *Link) Cells() bool {
	st := l.conn.ConnectionState()
	return l.version >= CellVersion && st.SupportsDatagrams.Local && st.SupportsDatagrams.Remote
}

// SendCell hands one cell to the link as a QUIC datagram.
func (l *Link) SendCell(b []byte) error { return l.conn.SendDatagram(b) }

// ReceiveCell waits for the link's next datagram.
func (l *Link) ReceiveCell(ctx context.Context) ([]byte, error) { return l.conn.ReceiveDatagram(ctx) }

// Probe calls health on the peer; it is the link's liveness check.
func (l *Link) Probe(ctx context.Context) error {
	fut, release := l.remote.Health(ctx, nil)
	defer release()
	_, err := fut.Struct()
	return err
}

// Peer returns the fingerprint the peer proved.
func (l *Link) Peer() identity.Fingerprint { return l.fp }

// Outbound reports whether this side dialled.
func (l *Link) Outbound() bool { return l.outbound }

// RemoteAddr returns the peer's UDP address.
func (l *Link) RemoteAddr() net.Addr { return l.conn.RemoteAddr() }

// Version is the protocol version the two sides agreed on in hello.
func (l *Link) Version() uint16 { return l.version }

// PeerHello returns what the peer said in hello.
func (l *Link) PeerHello() Hello { return l.hello }

// Since returns when the link came up.
func (l *Link) Since() time.Time { return l.since }

// RTT returns QUIC's smoothed round-trip estimate.
func (l *Link) RTT() time.Duration { return l.conn.ConnectionStats().SmoothedRTT }

// Remote returns the peer's MeshPeer capability (borrowed; do not release).
func (l *Link) Remote() schemas.MeshPeer { return l.remote }

// Done is closed when the connection ends for any reason.
func (l *Link) Done() <-chan struct{} { return l.conn.Context().Done() }

// Err returns why the connection ended (nil while it is up).
func (l *Link) Err() error { return context.Cause(l.conn.Context()) }

// Close ends the link with code and reason. Safe to call more than once.
func (l *Link) Close(code quic.ApplicationErrorCode, reason string) {
	l.closeOnce.Do(func() {
		l.remote.Release()
		l.rpc.Close()
		l.conn.CloseWithError(code, reason)
	})
}

// Abort ends the connection with code and reason without waiting for
// RPC calls in progress, so a call's own handler may use it; whoever runs
// the link sees Done and calls Close.
func (l *Link) Abort(code quic.ApplicationErrorCode, reason string) {
	l.conn.CloseWithError(code, reason)
}

func (l *Link) closeRPC() {
	l.remote.Release()
	l.rpc.Close()
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}

// PeerServer is the part of the MeshPeer every link needs: hello and
// health. Store and forward's calls (push, summary, raise) are
// gossip/wire's, whose server embeds this one; on its own it answers them
// unimplemented, as a node that does not relay would.
type PeerServer struct {
	Local Hello
	Stats func() (uptime time.Duration, links int)
}

// Push is not served here (gossip/wire serves it).
func (s *PeerServer) Push(ctx context.Context, call schemas.MeshPeer_push) error {
	return capnp.Unimplemented("push: not served by this node")
}

// Summary is not served here (gossip/wire serves it).
func (s *PeerServer) Summary(ctx context.Context, call schemas.MeshPeer_summary) error {
	return capnp.Unimplemented("summary: not served by this node")
}

// Raise is not served here (gossip/wire serves it).
func (s *PeerServer) Raise(ctx context.Context, call schemas.MeshPeer_raise) error {
	return capnp.Unimplemented("raise: not served by this node")
}

// Place is not served here (gossip/wire serves it).
func (s *PeerServer) Place(ctx context.Context, call schemas.MeshPeer_place) error {
	return capnp.Unimplemented("place: not served by this node")
}

// Pull is not served here (gossip/wire serves it).
func (s *PeerServer) Pull(ctx context.Context, call schemas.MeshPeer_pull) error {
	return capnp.Unimplemented("pull: not served by this node")
}

// Onion is not served here (gossip/wire serves it).
func (s *PeerServer) Onion(ctx context.Context, call schemas.MeshPeer_onion) error {
	return capnp.Unimplemented("onion: not served by this node")
}

// Hello answers a peer's hello, refusing an incompatible version.
func (s *PeerServer) Hello(ctx context.Context, call schemas.MeshPeer_hello) error {
	h, err := call.Args().Hello()
	if err != nil {
		return fmt.Errorf("hello: %w", err)
	}
	res, err := call.AllocResults()
	if err != nil {
		return err
	}
	return AnswerHello(s.Local, h, res.NewHello)
}

// AnswerHello checks a received hello against local and writes local into
// the answer made by alloc; node and client services share it.
func AnswerHello(local Hello, theirs schemas.Hello, alloc func() (schemas.Hello, error)) error {
	t, err := ReadHello(theirs)
	if err != nil {
		return err
	}
	if _, err := Negotiate(local, t); err != nil {
		return err
	}
	out, err := alloc()
	if err != nil {
		return err
	}
	return WriteHello(out, local)
}

// Health reports uptime and link count.
func (s *PeerServer) Health(ctx context.Context, call schemas.MeshPeer_health) error {
	res, err := call.AllocResults()
	if err != nil {
		return err
	}
	h, err := res.NewHealth()
	if err != nil {
		return err
	}
	if s.Stats != nil {
		up, n := s.Stats()
		h.SetUptimeSeconds(uint64(up / time.Second))
		h.SetLinks(uint32(n))
	}
	return nil
}
