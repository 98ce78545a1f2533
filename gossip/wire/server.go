package wire

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
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
	Accept(env gossip.Envelope, src relay.Source) (added bool, err error)
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
	var accepted uint32
	for i := 0; i < list.Len(); i++ {
		env, err := gossip.FromCapnp(list.At(i))
		if err != nil {
			s.log.Debug("dropped envelope from peer", "peer", s.from, "err", err)
			continue
		}
		added, err := s.o.Handler.Accept(env, relay.Source{Peer: s.from})
		if errors.Is(err, relay.ErrRateLimited) {
			return err
		}
		if err != nil {
			s.log.Debug("refused envelope from peer", "peer", s.from, "id", env.ID, "err", err)
			continue
		}
		if added {
			accepted++
		}
	}
	res, err := call.AllocResults()
	if err != nil {
		return err
	}
	res.SetAccepted(accepted)
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
