// Package client is the Go client library for a qpq node: it dials a node
// over QUIC (ALPN "capnp"), hands it envelopes, publishes and looks up key
// bundles, and opens the user's mailbox after authenticating. The sealing
// itself lives in node/e2e.
//
// A Session keeps an authenticated connection alive across node restarts
// (reconnecting with backoff and jitter, authenticating again), and a
// Reader fetches the mailbox and channels through it, handing each
// envelope over once; `qpq recv` and the chat client are built on both.
// WatchReceipts follows every receipt a node sees, so that a sender
// learns its DMs were fetched by matching their tags itself, never
// asking a node about one (receipts.go).
package client

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"capnproto.org/go/capnp/v3"
	"capnproto.org/go/capnp/v3/rpc"
	"github.com/quic-go/quic-go"

	"github.com/quicproquo/qpq/gossip"
	"github.com/quicproquo/qpq/mesh/descriptor"
	"github.com/quicproquo/qpq/mesh/identity"
	"github.com/quicproquo/qpq/mesh/link"
	"github.com/quicproquo/qpq/node/buildinfo"
	"github.com/quicproquo/qpq/node/e2e"
	"github.com/quicproquo/qpq/schemas"
)

// Client is one connection to a node.
type Client struct {
	tr     *link.Transport
	conn   *quic.Conn
	rc     *rpc.Conn
	node   schemas.Node
	nodeFP identity.Fingerprint
	addr   string

	closeOnce sync.Once
	closeErr  error
}

// Dial connects to the node at addr. With a zero pin any node key is
// accepted and NodeFingerprint tells which one answered (trust on first
// use; the caller remembers it).
func Dial(ctx context.Context, addr string, pin identity.Fingerprint) (*Client, error) {
	return DialFrom(ctx, localFor(addr), addr, pin)
}

// DialFrom is Dial from a chosen local address (tests use several
// loopback addresses to act as several clients).
func DialFrom(ctx context.Context, local, addr string, pin identity.Fingerprint) (*Client, error) {
	tr, err := link.NewDialer(local, nil)
	if err != nil {
		return nil, err
	}
	conn, err := tr.Dial(ctx, addr, pin, link.ALPNClient)
	if err != nil {
		tr.Close()
		if isNoAnswer(err) {
			return nil, noNodeError(addr, err)
		}
		return nil, err
	}
	fp, err := link.PeerFingerprint(conn.ConnectionState().TLS)
	if err != nil {
		tr.Close()
		return nil, err
	}
	rc, boot, err := link.OpenStream(ctx, conn, capnp.Client{}, nil)
	if err != nil {
		tr.Close()
		return nil, err
	}
	c := &Client{tr: tr, conn: conn, rc: rc, node: schemas.Node(boot), nodeFP: fp, addr: addr}
	if err := c.hello(ctx); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// localFor picks the local address to bind: loopback for a loopback node,
// else any.
func localFor(addr string) string {
	if len(addr) > 10 && addr[:10] == "127.0.0.1:" || len(addr) > 6 && addr[:6] == "[::1]:" {
		return "127.0.0.1:0"
	}
	return ":0"
}

// NodeFingerprint is the key the node proved.
func (c *Client) NodeFingerprint() identity.Fingerprint { return c.nodeFP }

// Close ends the connection. Safe to call twice.
func (c *Client) Close() error {
	c.closeOnce.Do(func() {
		c.node.Release()
		c.rc.Close()
		c.conn.CloseWithError(link.CodeClosing, "")
		c.closeErr = c.tr.Close()
	})
	return c.closeErr
}

func (c *Client) hello(ctx context.Context) error {
	fut, release := c.node.Hello(ctx, func(p schemas.Node_hello_Params) error {
		h, err := p.NewHello()
		if err != nil {
			return err
		}
		return link.WriteHello(h, link.LocalHello(buildinfo.String(), "qpq"))
	})
	defer release()
	res, err := fut.Struct()
	if err != nil {
		return fmt.Errorf("hello to node %s: %w", c.addr, err)
	}
	h, err := res.Hello()
	if err != nil {
		return err
	}
	theirs, err := link.ReadHello(h)
	if err != nil {
		return err
	}
	_, err = link.Negotiate(link.LocalHello("", ""), theirs)
	return err
}

// Enqueue hands the node an envelope; stored is false when it had it.
// A refusal for lack of room for this sender is ErrNodeFull.
func (c *Client) Enqueue(ctx context.Context, env gossip.Envelope) (stored bool, err error) {
	fut, release := c.node.Enqueue(ctx, func(p schemas.Node_enqueue_Params) error {
		e, err := p.NewEnvelope()
		if err != nil {
			return err
		}
		return env.ToCapnp(e)
	})
	defer release()
	res, err := fut.Struct()
	if err != nil {
		return false, enqueueError(c.addr, err)
	}
	return res.Stored(), nil
}

// PublishBundle publishes a SignedBundle.
func (c *Client) PublishBundle(ctx context.Context, signed []byte) error {
	fut, release := c.node.PublishBundle(ctx, func(p schemas.Node_publishBundle_Params) error {
		return p.SetBundle(signed)
	})
	defer release()
	_, err := fut.Struct()
	return err
}

// ErrNoBundle: the node knows no bundle for that user.
var ErrNoBundle = errors.New("no key bundle known for that user")

// LookupBundle fetches and verifies the bundle of user fp.
func (c *Client) LookupBundle(ctx context.Context, fp identity.Fingerprint) (e2e.Bundle, error) {
	fut, release := c.node.LookupBundle(ctx, func(p schemas.Node_lookupBundle_Params) error {
		return p.SetFingerprint(fp[:])
	})
	defer release()
	res, err := fut.Struct()
	if err != nil {
		return e2e.Bundle{}, err
	}
	signed, err := res.Bundle()
	if err != nil {
		return e2e.Bundle{}, err
	}
	if len(signed) == 0 {
		return e2e.Bundle{}, fmt.Errorf("%w (%s) at node %s", ErrNoBundle, fp, c.addr)
	}
	b, err := e2e.VerifyBundle(signed)
	if err != nil {
		return e2e.Bundle{}, fmt.Errorf("bundle from node: %w", err)
	}
	// Never trust a node's word for whose bundle it is.
	if !b.Fingerprint.Equal(fp) {
		return e2e.Bundle{}, fmt.Errorf("node returned the bundle of %s for %s", b.Fingerprint, fp)
	}
	return b, nil
}

// Mailbox is an authenticated user's mailbox at the node.
type Mailbox struct{ mb schemas.Mailbox }

// Challenge asks the node for a nonce and returns it with this
// session's TLS exporter value, the two things a signature binds to.
func (c *Client) Challenge(ctx context.Context) (nonce, exporter []byte, err error) {
	cf, rel := c.node.Challenge(ctx, nil)
	defer rel()
	cres, err := cf.Struct()
	if err != nil {
		return nil, nil, fmt.Errorf("challenge: %w", err)
	}
	n, err := cres.Nonce()
	if err != nil {
		return nil, nil, err
	}
	exp, err := link.Exporter(c.conn.ConnectionState().TLS)
	if err != nil {
		return nil, nil, err
	}
	return append([]byte(nil), n...), exp, nil
}

// Authenticate proves the user's key to the node (signing its challenge
// bound to this node and this TLS session) and opens the user's mailbox.
// The node also publishes signedBundle.
func (c *Client) Authenticate(ctx context.Context, u *e2e.User, signedBundle []byte) (*Mailbox, error) {
	nonce, exp, err := c.Challenge(ctx)
	if err != nil {
		return nil, err
	}
	sig, err := u.SignPurpose(link.AuthSigLabel, link.AuthMessage(link.PurposeMailbox, c.nodeFP, exp, nonce))
	if err != nil {
		return nil, err
	}
	return c.AuthenticateWith(ctx, signedBundle, nonce, sig)
}

// AuthenticateWith sends a prepared authentication (Authenticate's second
// half; tests use it to replay signatures).
func (c *Client) AuthenticateWith(ctx context.Context, signedBundle, nonce, sig []byte) (*Mailbox, error) {
	af, rel := c.node.Authenticate(ctx, func(p schemas.Node_authenticate_Params) error {
		if err := p.SetBundle(signedBundle); err != nil {
			return err
		}
		if err := p.SetNonce(nonce); err != nil {
			return err
		}
		return p.SetSignature(sig)
	})
	defer rel()
	ares, err := af.Struct()
	if err != nil {
		return nil, fmt.Errorf("authenticate: %w", err)
	}
	return &Mailbox{mb: ares.Mailbox().AddRef()}, nil
}

// Fetch returns up to limit envelopes for the user, waiting up to wait
// when there are none.
func (m *Mailbox) Fetch(ctx context.Context, limit int, wait time.Duration) ([]gossip.Envelope, error) {
	fut, release := m.mb.Fetch(ctx, func(p schemas.Mailbox_fetch_Params) error {
		p.SetLimit(uint32(limit))
		p.SetWaitSeconds(uint32(wait / time.Second))
		return nil
	})
	defer release()
	res, err := fut.Struct()
	if err != nil {
		return nil, err
	}
	return envelopesOf(res)
}

// Ack reveals receipt secrets, deleting those messages mesh-wide.
func (m *Mailbox) Ack(ctx context.Context, secrets [][]byte) (int, error) {
	fut, release := m.mb.Ack(ctx, func(p schemas.Mailbox_ack_Params) error {
		l, err := p.NewSecrets(int32(len(secrets)))
		if err != nil {
			return err
		}
		for i, k := range secrets {
			if err := l.Set(i, k); err != nil {
				return err
			}
		}
		return nil
	})
	defer release()
	res, err := fut.Struct()
	if err != nil {
		return 0, err
	}
	return int(res.Deleted()), nil
}

// Release drops the mailbox capability.
func (m *Mailbox) Release() { m.mb.Release() }

// ChannelFetch returns broadcasts held for the channel ids after the
// envelope ids in after (zero: the newest limit), waiting up to wait when
// there are none.
func (c *Client) ChannelFetch(ctx context.Context, ids [][32]byte, after []gossip.ID, limit int, wait time.Duration) ([]gossip.Envelope, error) {
	fut, release := c.node.ChannelFetch(ctx, func(p schemas.Node_channelFetch_Params) error {
		l, err := p.NewChannels(int32(len(ids)))
		if err != nil {
			return err
		}
		for i, id := range ids {
			if err := l.Set(i, id[:]); err != nil {
				return err
			}
		}
		al, err := p.NewAfter(int32(len(after)))
		if err != nil {
			return err
		}
		for i, a := range after {
			if a != (gossip.ID{}) {
				if err := al.Set(i, a[:]); err != nil {
					return err
				}
			}
		}
		p.SetLimit(uint32(limit))
		p.SetWaitSeconds(uint32(wait / time.Second))
		return nil
	})
	defer release()
	res, err := fut.Struct()
	if err != nil {
		return nil, err
	}
	return envelopesOf(res)
}

// envelopesOf checks and converts the envelopes of a fetch result.
func envelopesOf(res interface {
	Envelopes() (schemas.Envelope_List, error)
}) ([]gossip.Envelope, error) {
	list, err := res.Envelopes()
	if err != nil {
		return nil, err
	}
	out, err := gossip.FromCapnpList(list)
	if err != nil {
		return nil, fmt.Errorf("from node: %w", err)
	}
	return out, nil
}

// DialNotify is Dial that calls slow once, from another goroutine, when
// the node has not answered within after (so a user sees that it is
// trying). slow has returned before DialNotify does.
func DialNotify(ctx context.Context, addr string, pin identity.Fingerprint, after time.Duration, slow func()) (*Client, error) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTimer(after)
		defer t.Stop()
		select {
		case <-t.C:
			slow()
		case <-done:
		}
	}()
	c, err := Dial(ctx, addr, pin)
	close(done)
	wg.Wait()
	return c, err
}

// Done is closed when the QUIC connection ends (the node closed it, or
// it went idle past the timeout).
func (c *Client) Done() <-chan struct{} { return c.conn.Context().Done() }

// Ping asks the node for its health, proving it still answers on this
// connection.
func (c *Client) Ping(ctx context.Context) error {
	fut, release := c.node.Health(ctx, nil)
	defer release()
	if _, err := fut.Struct(); err != nil {
		return fmt.Errorf("health: %w", err)
	}
	return nil
}

// SendOnion hands the node an onion packet (mesh/onion) for the route's
// first relay, the node first. Like Enqueue it needs no authentication.
// With a replyID (the packet carries a reply block whose return route
// ends at this node) it waits up to wait for the exit's reply: acked
// says it came, that is, the exit stored the message.
func (c *Client) SendOnion(ctx context.Context, first identity.Fingerprint, pkt, replyID []byte, wait time.Duration) (acked bool, err error) {
	fut, release := c.node.SendOnion(ctx, func(p schemas.Node_sendOnion_Params) error {
		if err := p.SetFirst(first[:]); err != nil {
			return err
		}
		if err := p.SetReplyId(replyID); err != nil {
			return err
		}
		p.SetWaitMs(uint32(min(max(wait.Milliseconds(), 0), 60_000)))
		return p.SetPacket(pkt)
	})
	defer release()
	res, err := fut.Struct()
	if err != nil {
		return false, fmt.Errorf("send onion packet to node %s: %w", c.addr, err)
	}
	return res.Acked(), nil
}

// Descriptors asks the node for up to limit onion relays' descriptors
// and returns those whose signatures verify; a node that sends a bad one
// has it left out, not trusted.
func (c *Client) Descriptors(ctx context.Context, limit int) ([]descriptor.Descriptor, error) {
	fut, release := c.node.Descriptors(ctx, func(p schemas.Node_descriptors_Params) error {
		p.SetLimit(uint32(max(limit, 0)))
		return nil
	})
	defer release()
	res, err := fut.Struct()
	if err != nil {
		return nil, fmt.Errorf("descriptors from node %s: %w", c.addr, err)
	}
	l, err := res.Descriptors()
	if err != nil {
		return nil, fmt.Errorf("descriptors from node %s: %w", c.addr, err)
	}
	var out []descriptor.Descriptor
	for i := 0; i < l.Len() && i < max(limit, 64); i++ {
		b, err := l.At(i)
		if err != nil {
			continue
		}
		if d, err := descriptor.Verify(b); err == nil {
			out = append(out, d)
		}
	}
	return out, nil
}
