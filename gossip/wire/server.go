package wire

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"sync/atomic"
	"time"

	"capnproto.org/go/capnp/v3"

	"github.com/quicproquo/qpq/gossip"
	"github.com/quicproquo/qpq/gossip/relay"
	"github.com/quicproquo/qpq/mesh/identity"
	"github.com/quicproquo/qpq/mesh/link"
	"github.com/quicproquo/qpq/schemas"
)

// Handler takes the calls a neighbour makes, decoded and checked;
// *relay.Engine is the node's. Byte slices it is given point into the
// RPC message: they are valid only until the method returns.
type Handler interface {
	// AcceptPush takes a push's envelopes; flow says the neighbour reads
	// flow-control answers (protocol version 2 on).
	AcceptPush(from identity.Fingerprint, envs []gossip.Envelope, flow bool) (relay.PushResult, error)
	HandleSummary(from identity.Fingerprint, s relay.Summary) error
	HandleRaise(from identity.Fingerprint, raises []relay.HopRaise) error
}

// ServerOptions configure a Server.
type ServerOptions struct {
	// Local is the hello this node answers with.
	Local link.Hello
	// Stats reports uptime and link count for health (nil: zeros). It is
	// called on the RPC goroutine and must not block.
	Stats func() (uptime time.Duration, links int)
	// Handler takes push, summary and raise. Nil: they answer
	// unimplemented, as a node that does not relay would.
	Handler Handler
	// Mailboxes serves place and pull (mailbox placement). Nil: they
	// answer unimplemented, as a node without placement would.
	Mailboxes Mailboxes
	// Onions takes onion packets. Nil: onion answers unimplemented, as a
	// node that does not relay them would.
	Onions Onions
	// Log gets refused envelopes (debug) and recovered panics (error).
	// Nil discards.
	Log *slog.Logger
	// Drop is called when a call from this neighbour panicked: the node
	// closes the link. It runs on the RPC goroutine, so it must not wait
	// for calls in progress (link.Link.Abort does not). Nil: the call
	// fails and the link stays.
	Drop func(reason string)
}

// Server is the MeshPeer a node offers one neighbour: hello and health
// from mesh/link, push, summary and raise decoded into the Handler.
type Server struct {
	link.PeerServer
	from identity.Fingerprint
	o    ServerOptions
	log  *slog.Logger
	// version is the protocol version agreed when the neighbour's hello
	// was answered; 0 before (a push cannot come before it: the
	// neighbour's link is up only once we answered).
	version atomic.Uint32
}

// flowVersion is the first protocol version whose pushes get flow-control
// answers (taken, retryAfterMs) instead of a rate-limit error.
const flowVersion = 2

// Hello answers the neighbour's hello (mesh/link) and remembers the
// version the two sides agreed on, which says how to answer its pushes.
func (s *Server) Hello(ctx context.Context, call schemas.MeshPeer_hello) error {
	if err := s.PeerServer.Hello(ctx, call); err != nil {
		return err
	}
	if h, err := call.Args().Hello(); err == nil {
		if theirs, err := link.ReadHello(h); err == nil {
			if v, err := link.Negotiate(s.o.Local, theirs); err == nil {
				s.version.Store(uint32(v))
			}
		}
	}
	return nil
}

// NewServer returns the MeshPeer offered to the neighbour from.
func NewServer(from identity.Fingerprint, o ServerOptions) *Server {
	log := o.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Server{PeerServer: link.PeerServer{Local: o.Local, Stats: o.Stats}, from: from, o: o, log: log}
}

// Client returns the server as a capability, to offer as the link's
// bootstrap (the caller owns the reference).
func (s *Server) Client() capnp.Client {
	return capnp.Client(schemas.MeshPeer_ServerToClient(s))
}

// ErrInternal is returned for a call whose handling panicked.
var ErrInternal = errors.New("internal error handling the call")

// recover turns a panic in a handler into an error and drops the link:
// one neighbour's bad input must never take the node down. Deferred by
// every call that reaches the Handler.
func (s *Server) recover(method string, err *error) {
	r := recover()
	if r == nil {
		return
	}
	s.log.Error("neighbour call panicked; dropping the link", "peer", s.from, "method", method, "panic", r, "stack", string(debug.Stack()))
	*err = fmt.Errorf("%s: %w", method, ErrInternal)
	if s.o.Drop != nil {
		s.o.Drop(method + ": internal error")
	}
}

// Push stores what a neighbour pushes and answers how many were new.
func (s *Server) Push(ctx context.Context, call schemas.MeshPeer_push) (err error) {
	if s.o.Handler == nil {
		return s.PeerServer.Push(ctx, call)
	}
	defer s.recover("push", &err)
	list, err := call.Args().Envelopes()
	if err != nil {
		return fmt.Errorf("push: %w", err)
	}
	if list.Len() > relay.MaxPush {
		return fmt.Errorf("push of %d envelopes, at most %d", list.Len(), relay.MaxPush)
	}
	envs := make([]gossip.Envelope, 0, list.Len())
	at := make([]int, 0, list.Len()) // each decoded envelope's place in the list
	for i := 0; i < list.Len(); i++ {
		env, err := gossip.FromCapnp(list.At(i))
		if err != nil {
			// Refused for good: counted as taken, so the sender does not
			// send it again.
			s.log.Debug("dropped envelope from peer", "peer", s.from, "err", err)
			continue
		}
		envs = append(envs, env)
		at = append(at, i)
	}
	flow := s.version.Load() >= flowVersion
	r, err := s.o.Handler.AcceptPush(s.from, envs, flow)
	if err != nil {
		return err
	}
	// Taken counts list places: undecodable envelopes before the first
	// one not taken were handled too.
	taken := list.Len()
	if r.Taken < len(envs) {
		taken = at[max(r.Taken, 0)]
	}
	res, err := call.AllocResults()
	if err != nil {
		return err
	}
	res.SetAccepted(uint32(r.Accepted))
	if flow {
		res.SetTaken(uint32(taken))
		if taken < list.Len() {
			res.SetRetryAfterMs(uint32(min(max(r.RetryAfter.Milliseconds(), 1), 60_000)))
		}
	}
	return nil
}

// Summary hands a neighbour's digest to the Handler, which pushes back
// what the neighbour lacks.
func (s *Server) Summary(ctx context.Context, call schemas.MeshPeer_summary) (err error) {
	if s.o.Handler == nil {
		return s.PeerServer.Summary(ctx, call)
	}
	defer s.recover("summary", &err)
	sum, err := call.Args().Summary()
	if err != nil {
		return fmt.Errorf("summary: %w", err)
	}
	filter, err := sum.Filter()
	if err != nil {
		return fmt.Errorf("summary: %w", err)
	}
	key, err := sum.Key()
	if err != nil {
		return fmt.Errorf("summary: %w", err)
	}
	rs := relay.Summary{Filter: filter, Key: key, Count: sum.Count()}
	if err := readSummaryRange(sum, &rs); err != nil {
		return fmt.Errorf("summary: %w", err)
	}
	return s.o.Handler.HandleSummary(s.from, rs)
}

// Raise checks a raise notice and hands it to the Handler. A list over
// relay.MaxRaises or an id of the wrong length refuses the whole call.
func (s *Server) Raise(ctx context.Context, call schemas.MeshPeer_raise) (err error) {
	if s.o.Handler == nil {
		return s.PeerServer.Raise(ctx, call)
	}
	defer s.recover("raise", &err)
	list, err := call.Args().Raises()
	if err != nil {
		return fmt.Errorf("raise: %w", err)
	}
	raises, err := ReadRaises(list)
	if err != nil {
		return err
	}
	if err := s.o.Handler.HandleRaise(s.from, raises); err != nil {
		return fmt.Errorf("raise: %w", err)
	}
	return nil
}
