package link

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/quicproquo/qpq/mesh/identity"
)

// Timeouts of every QUIC connection. Keep-alives hold NAT and firewall
// state open and notice a vanished neighbour within the idle timeout.
const (
	HandshakeTimeout = 10 * time.Second
	KeepAlivePeriod  = 10 * time.Second
	IdleTimeout      = 40 * time.Second
)

// Application error codes sent when closing a connection.
const (
	CodeClosing   quic.ApplicationErrorCode = 0 // normal shutdown
	CodeDuplicate quic.ApplicationErrorCode = 1 // another connection to this peer is kept
	CodeRefused   quic.ApplicationErrorCode = 2 // hello failed or the peer is not wanted
	CodeReplaced  quic.ApplicationErrorCode = 3 // dropped for a faster link: do not redial at once
)

func quicConfig() *quic.Config {
	return &quic.Config{
		HandshakeIdleTimeout: HandshakeTimeout,
		MaxIdleTimeout:       IdleTimeout,
		KeepAlivePeriod:      KeepAlivePeriod,
		// Routers have 64-128 MB: keep per-connection buffers small.
		InitialStreamReceiveWindow:     256 << 10,
		MaxStreamReceiveWindow:         1 << 20,
		InitialConnectionReceiveWindow: 512 << 10,
		MaxConnectionReceiveWindow:     2 << 20,
		MaxIncomingStreams:             8,
		MaxIncomingUniStreams:          -1,
		// Link cells ride DATAGRAM frames (mesh/cell). Packets stay at
		// quic-go's first size (1,280 bytes): a cell then fills its
		// packet, and no STREAM frame fits beside it to change the size
		// an observer sees.
		EnableDatagrams:         true,
		DisablePathMTUDiscovery: true,
	}
}

// Transport is a node's one UDP socket, used both to accept connections
// (when listening) and to dial them.
type Transport struct {
	id   *identity.Node
	cert tls.Certificate
	udp  *net.UDPConn
	tr   *quic.Transport
	ln   *quic.Listener // nil when not listening (clients)
	adm  *admission     // bounds incoming handshakes; nil when not listening

	closeOnce sync.Once
	closeErr  error
}

// Listen binds addr (host:port) and accepts QUIC connections for both
// ALPNs on it.
func Listen(addr string, id *identity.Node) (*Transport, error) {
	t, err := bind(addr, id)
	if err != nil {
		return nil, err
	}
	// Set before the first Listen or Dial: quic-go reads them once.
	t.adm = newAdmission()
	t.tr.VerifySourceAddress = t.adm.retry
	t.tr.ConnContext = t.adm.connContext
	ln, err := t.tr.Listen(serverTLS(t.cert), quicConfig())
	if err != nil {
		t.Close()
		return nil, fmt.Errorf("listen QUIC on %s: %w", addr, err)
	}
	t.ln = ln
	return t, nil
}

// NewDialer binds addr (often "127.0.0.1:0" or ":0") for dialling only.
// id may be nil: a client without a certificate can still dial a node.
func NewDialer(addr string, id *identity.Node) (*Transport, error) {
	return bind(addr, id)
}

func bind(addr string, id *identity.Node) (*Transport, error) {
	if err := CheckHostPort(addr); err != nil {
		return nil, err
	}
	ua, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		return nil, fmt.Errorf("resolve %s: %w", addr, err)
	}
	udp, err := net.ListenUDP("udp", ua)
	if err != nil {
		return nil, fmt.Errorf("bind UDP %s: %w", addr, err)
	}
	t := &Transport{id: id, udp: udp, tr: &quic.Transport{Conn: udp}}
	if id != nil {
		t.cert, err = certificate(id.Key)
		if err != nil {
			udp.Close()
			return nil, err
		}
	}
	return t, nil
}

// Addr returns the address actually bound.
func (t *Transport) Addr() *net.UDPAddr { return t.udp.LocalAddr().(*net.UDPAddr) }

// Accept waits for the next connection whose handshake completed. For
// ALPNPeer the client certificate is checked only after the client's side
// of the handshake, so callers treat a link as up only once hello answers.
// A connection stops counting against the handshake bounds once accepted:
// the caller bounds what follows (hello, client slots).
func (t *Transport) Accept(ctx context.Context) (*quic.Conn, error) {
	if t.ln == nil {
		return nil, errors.New("accept: transport is not listening")
	}
	conn, err := t.ln.Accept(ctx)
	if err != nil {
		return nil, err
	}
	accepted(conn)
	return conn, nil
}

// Dial connects to addr over alpn and requires the peer to prove the key
// whose fingerprint is expect.
func (t *Transport) Dial(ctx context.Context, addr string, expect identity.Fingerprint, alpn string) (*quic.Conn, error) {
	ua, err := resolve(ctx, addr)
	if err != nil {
		return nil, err
	}
	var cert *tls.Certificate
	if t.id != nil {
		cert = &t.cert
	}
	conn, err := t.tr.Dial(ctx, ua, clientTLS(cert, alpn, expect), quicConfig())
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", addr, err)
	}
	return conn, nil
}

func resolve(ctx context.Context, addr string) (*net.UDPAddr, error) {
	if err := CheckHostPort(addr); err != nil {
		return nil, err
	}
	host, port, _ := net.SplitHostPort(addr)
	ips, err := net.DefaultResolver.LookupNetIP(ctx, "ip", host)
	if err != nil || len(ips) == 0 {
		return nil, fmt.Errorf("resolve %s: %w", addr, err)
	}
	ua, err := net.ResolveUDPAddr("udp", net.JoinHostPort(ips[0].String(), port))
	if err != nil {
		return nil, fmt.Errorf("resolve %s: %w", addr, err)
	}
	return ua, nil
}

// Close stops listening and closes the socket and every connection on it.
// It is safe to call more than once.
func (t *Transport) Close() error {
	t.closeOnce.Do(func() {
		if t.ln != nil {
			t.ln.Close()
		}
		t.closeErr = t.tr.Close()
		// quic.Transport does not own a socket it was handed.
		if err := t.udp.Close(); err != nil && t.closeErr == nil && !errors.Is(err, net.ErrClosed) {
			t.closeErr = err
		}
	})
	return t.closeErr
}
