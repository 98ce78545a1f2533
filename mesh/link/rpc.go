package link

import (
	"context"
	"fmt"
	"io"
	"log/slog"

	"capnproto.org/go/capnp/v3"
	"capnproto.org/go/capnp/v3/rpc"
	"github.com/quic-go/quic-go"
)

// MaxRPCMessage bounds one Cap'n Proto message read from a peer. A sealed
// 16 KiB body with its KEM overhead is ~18 KiB; batches stay well under
// this. The library default (64 MiB) would let one peer exhaust a router.
const MaxRPCMessage = 256 << 10

// rpcStream adapts a QUIC stream for capnp: capnp relies on Close to
// unblock its reader, but quic.Stream.Close only closes the send side.
type rpcStream struct{ *quic.Stream }

func (s rpcStream) Close() error {
	s.Stream.CancelRead(0)
	return s.Stream.Close()
}

// boundedCodec is the stream codec with a read limit.
type boundedCodec struct {
	*capnp.Decoder
	*capnp.Encoder
	io.Closer
}

func newRPCConn(s *quic.Stream, bootstrap capnp.Client, log *slog.Logger) *rpc.Conn {
	return NewRPCConn(rpcStream{s}, bootstrap, log)
}

// NewRPCConn runs RPC over rwc with the link's read limit, offering
// bootstrap (which it takes). A link's cell stream (mesh/cell.Stream)
// carries its message calls this way.
func NewRPCConn(rwc io.ReadWriteCloser, bootstrap capnp.Client, log *slog.Logger) *rpc.Conn {
	dec := capnp.NewDecoder(rwc)
	dec.MaxMessageSize = MaxRPCMessage
	codec := boundedCodec{Decoder: dec, Encoder: capnp.NewEncoder(rwc), Closer: rwc}
	opts := &rpc.Options{BootstrapClient: bootstrap}
	if log != nil {
		opts.Logger = rpcLogger{log}
	}
	return rpc.NewConn(rpc.NewTransport(codec), opts)
}

// ServeStream accepts the connection's first bidirectional stream and
// serves bootstrap on it (a node serving a client). NewConn steals the
// bootstrap reference. The returned Conn closes with the connection.
func ServeStream(ctx context.Context, conn *quic.Conn, bootstrap capnp.Client, log *slog.Logger) (*rpc.Conn, error) {
	s, err := conn.AcceptStream(ctx)
	if err != nil {
		bootstrap.Release()
		return nil, fmt.Errorf("accept RPC stream from %s: %w", conn.RemoteAddr(), err)
	}
	return newRPCConn(s, bootstrap, log), nil
}

// OpenStream opens the connection's first bidirectional stream for RPC
// and returns the connection and the peer's bootstrap capability (a client
// calling its node). bootstrap may be the zero Client.
func OpenStream(ctx context.Context, conn *quic.Conn, bootstrap capnp.Client, log *slog.Logger) (*rpc.Conn, capnp.Client, error) {
	s, err := conn.OpenStreamSync(ctx)
	if err != nil {
		bootstrap.Release()
		return nil, capnp.Client{}, fmt.Errorf("open RPC stream to %s: %w", conn.RemoteAddr(), err)
	}
	rc := newRPCConn(s, bootstrap, log)
	return rc, rc.Bootstrap(ctx), nil
}

// rpcLogger demotes capnp's own messages to debug: a peer that goes away
// mid-call is routine on a mesh, and the link layer logs it once already.
type rpcLogger struct{ l *slog.Logger }

func (r rpcLogger) Debug(msg string, args ...any) { r.l.Debug(msg, args...) }
func (r rpcLogger) Info(msg string, args ...any)  { r.l.Debug(msg, args...) }
func (r rpcLogger) Warn(msg string, args ...any)  { r.l.Debug(msg, args...) }
func (r rpcLogger) Error(msg string, args ...any) { r.l.Debug(msg, args...) }
