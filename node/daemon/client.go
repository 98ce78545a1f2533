package daemon

import (
	"context"
	"fmt"
	"net"
	"time"

	"capnproto.org/go/capnp/v3"
	"github.com/quic-go/quic-go"

	"github.com/quicproquo/qpq/mesh/link"
	"github.com/quicproquo/qpq/schemas"
)

// clientIdle closes a client connection that never opens its RPC stream.
const clientIdle = 30 * time.Second

// nodeService is the Node capability a client gets (ALPN "capnp").
type nodeService struct{ d *Daemon }

func (s nodeService) Hello(ctx context.Context, call schemas.Node_hello) error {
	h, err := call.Args().Hello()
	if err != nil {
		return fmt.Errorf("hello: %w", err)
	}
	res, err := call.AllocResults()
	if err != nil {
		return err
	}
	return link.AnswerHello(s.d.hello, h, res.NewHello)
}

func (s nodeService) Health(ctx context.Context, call schemas.Node_health) error {
	res, err := call.AllocResults()
	if err != nil {
		return err
	}
	h, err := res.NewHealth()
	if err != nil {
		return err
	}
	up, n := s.d.stats()
	h.SetUptimeSeconds(uint64(up / time.Second))
	h.SetLinks(uint32(n))
	return nil
}

func (d *Daemon) serveClient(conn *quic.Conn) {
	ctx, cancel := context.WithTimeout(d.ctx, clientIdle)
	// Quotas count per client address, not per connection, so opening
	// more connections buys no more room.
	label := conn.RemoteAddr().String()
	if ua, ok := conn.RemoteAddr().(*net.UDPAddr); ok {
		label = ua.IP.String()
	}
	sess := &clientSession{d: d, conn: conn, label: label}
	rc, err := link.ServeStream(ctx, conn, capnp.Client(schemas.Node_ServerToClient(sess)), d.log)
	cancel()
	if err != nil {
		conn.CloseWithError(link.CodeRefused, "no RPC stream")
		d.log.Debug("client gave up before RPC", "addr", conn.RemoteAddr(), "err", err)
		return
	}
	select {
	case <-rc.Done():
	case <-conn.Context().Done():
	case <-d.ctx.Done():
	}
	rc.Close()
	conn.CloseWithError(link.CodeClosing, "")
}
