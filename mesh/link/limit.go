package link

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"capnproto.org/go/capnp/v3"
	"capnproto.org/go/capnp/v3/rpc"
	rpccp "capnproto.org/go/capnp/v3/std/capnp/rpc"
)

// CallLimits bounds what one client connection may have in flight: calls
// received whose answers have not yet been written to the connection. A
// client that pipelines calls without reading the answers would otherwise
// make the node queue answers without bound (capnp's send queue is
// unbounded). Past a limit the connection is closed: its queued answers
// are dropped with it.
type CallLimits struct {
	MaxCalls  int           // per connection
	Shared    *atomic.Int64 // calls in flight over every connection from the same address; may be nil
	MaxShared int64
	// Total counts calls in flight over every client connection of the
	// node; not enforced here (the service refuses costly calls past its
	// own bound, without closing anyone's connection). May be nil.
	Total *atomic.Int64
	// WriteTimeout closes a connection whose answers cannot be written
	// for this long (0: no timeout).
	WriteTimeout time.Duration
}

// ErrTooManyCalls is why a connection over its CallLimits was closed.
var ErrTooManyCalls = errors.New("too many calls in flight without reading the answers")

// ServeLimited is Serve with lim enforced on the RPC stream.
func (in *Incoming) ServeLimited(ctx context.Context, bootstrap capnp.Client, log *slog.Logger, lim CallLimits) (*rpc.Conn, error) {
	s, err := in.conn.AcceptStream(ctx)
	if err != nil {
		bootstrap.Release()
		return nil, fmt.Errorf("accept RPC stream from %s: %w", in.conn.RemoteAddr(), err)
	}
	rs := rpcStream{s}
	dec := capnp.NewDecoder(rs)
	dec.MaxMessageSize = MaxRPCMessage
	codec := &limitedCodec{
		boundedCodec: boundedCodec{Decoder: dec, Encoder: capnp.NewEncoder(rs), Closer: rs},
		rs:           rs,
		in:           in,
		lim:          lim,
		open:         map[uint32]struct{}{},
	}
	opts := &rpc.Options{BootstrapClient: bootstrap}
	if log != nil {
		opts.Logger = rpcLogger{log}
	}
	return rpc.NewConn(rpc.NewTransport(codec), opts), nil
}

// limitedCodec counts calls (and bootstraps) read against the returns
// written for them.
type limitedCodec struct {
	boundedCodec
	rs  rpcStream
	in  *Incoming
	lim CallLimits

	mu     sync.Mutex // guards open and closed
	open   map[uint32]struct{}
	closed bool
}

func (c *limitedCodec) Decode() (*capnp.Message, error) {
	msg, err := c.Decoder.Decode()
	if err != nil {
		return nil, err
	}
	qid, ok := questionID(msg)
	if !ok {
		return msg, nil
	}
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil, ErrTooManyCalls
	}
	if _, dup := c.open[qid]; !dup {
		c.open[qid] = struct{}{}
		c.add(1)
	}
	over := len(c.open) > c.lim.MaxCalls ||
		(c.lim.Shared != nil && c.lim.MaxShared > 0 && c.lim.Shared.Load() > c.lim.MaxShared)
	c.mu.Unlock()
	if over {
		// Closing the connection unblocks a send stuck on a reader that
		// does not read; the queued answers go with it.
		c.in.Refuse(ErrTooManyCalls.Error())
		c.release()
		return nil, ErrTooManyCalls
	}
	return msg, nil
}

func (c *limitedCodec) Encode(msg *capnp.Message) error {
	if c.lim.WriteTimeout > 0 {
		c.rs.SetWriteDeadline(time.Now().Add(c.lim.WriteTimeout))
	}
	err := c.Encoder.Encode(msg)
	if err != nil {
		if c.lim.WriteTimeout > 0 {
			c.in.Refuse("answers not read")
		}
		return err
	}
	if m, e := rpccp.ReadRootMessage(msg); e == nil && m.Which() == rpccp.Message_Which_return {
		if r, e := m.Return(); e == nil {
			c.mu.Lock()
			if _, ok := c.open[r.AnswerId()]; ok {
				delete(c.open, r.AnswerId())
				c.add(-1)
			}
			c.mu.Unlock()
		}
	}
	return nil
}

func (c *limitedCodec) Close() error {
	c.release()
	return c.boundedCodec.Close()
}

// release gives back the shared count of every call still open.
func (c *limitedCodec) release() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return
	}
	c.closed = true
	c.add(-int64(len(c.open)))
	c.open = nil
}

// add moves the shared counts by n.
func (c *limitedCodec) add(n int64) {
	if c.lim.Shared != nil {
		c.lim.Shared.Add(n)
	}
	if c.lim.Total != nil {
		c.lim.Total.Add(n)
	}
}

// questionID returns the question a received call or bootstrap opens.
func questionID(msg *capnp.Message) (uint32, bool) {
	m, err := rpccp.ReadRootMessage(msg)
	if err != nil {
		return 0, false
	}
	switch m.Which() {
	case rpccp.Message_Which_call:
		call, err := m.Call()
		if err != nil {
			return 0, false
		}
		return call.QuestionId(), true
	case rpccp.Message_Which_bootstrap:
		b, err := m.Bootstrap()
		if err != nil {
			return 0, false
		}
		return b.QuestionId(), true
	}
	return 0, false
}
