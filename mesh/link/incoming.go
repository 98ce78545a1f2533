package link

import (
	"context"
	"log/slog"
	"net"

	"capnproto.org/go/capnp/v3"
	"capnproto.org/go/capnp/v3/rpc"
	"github.com/quic-go/quic-go"

	"github.com/quicproquo/qpq/mesh/identity"
)

// Incoming is a connection the transport accepted whose TLS handshake
// finished: the node decides from its ALPN whether it becomes a link or a
// client session, or refuses it. It keeps QUIC's types out of the node.
type Incoming struct{ conn *quic.Conn }

// AcceptIncoming waits for the next accepted connection.
func (t *Transport) AcceptIncoming(ctx context.Context) (*Incoming, error) {
	conn, err := t.Accept(ctx)
	if err != nil {
		return nil, err
	}
	return &Incoming{conn: conn}, nil
}

// ALPN returns the protocol the two sides agreed on (ALPNPeer, ALPNClient
// or ALPNDial; anything else is refused).
func (in *Incoming) ALPN() string { return in.conn.ConnectionState().TLS.NegotiatedProtocol }

// PeerFingerprint returns the fingerprint of the certificate the remote
// side presented (nodes present one; clients need not).
func (in *Incoming) PeerFingerprint() (identity.Fingerprint, error) {
	return PeerFingerprint(in.conn.ConnectionState().TLS)
}

// Exporter returns the TLS exporter value that binds an authentication
// to this session.
func (in *Incoming) Exporter() ([]byte, error) { return Exporter(in.conn.ConnectionState().TLS) }

// RemoteAddr returns the remote UDP address.
func (in *Incoming) RemoteAddr() net.Addr { return in.conn.RemoteAddr() }

// Refuse closes the connection with CodeRefused and reason.
func (in *Incoming) Refuse(reason string) { in.conn.CloseWithError(CodeRefused, reason) }

// Close closes the connection with code and reason (CodeClosing, ...).
func (in *Incoming) Close(code quic.ApplicationErrorCode, reason string) {
	in.conn.CloseWithError(code, reason)
}

// Done is closed when the connection ends for any reason.
func (in *Incoming) Done() <-chan struct{} { return in.conn.Context().Done() }

// Err returns why the connection ended (nil while it is up).
func (in *Incoming) Err() error { return context.Cause(in.conn.Context()) }

// Establish runs hello on an inbound node connection (see Establish).
func (in *Incoming) Establish(ctx context.Context, bootstrap capnp.Client, local Hello, log *slog.Logger) (*Link, error) {
	return Establish(ctx, in.conn, false, bootstrap, local, log)
}

// Serve accepts the connection's RPC stream and serves bootstrap on it
// (a node serving a client; see ServeStream).
func (in *Incoming) Serve(ctx context.Context, bootstrap capnp.Client, log *slog.Logger) (*rpc.Conn, error) {
	return ServeStream(ctx, in.conn, bootstrap, log)
}
