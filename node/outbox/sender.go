package outbox

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/quicproquo/qpq/node/client"
)

// SenderConfig tunes a Sender; the zero value is usable.
type SenderConfig struct {
	// Retry is the pause between passes while something is queued;
	// zero: 5 s.
	Retry time.Duration
	// Idle is the pause between passes when nothing is queued (stored
	// entries are still checked for expiry); zero: 1 min.
	Idle time.Duration
	// CallTimeout bounds each call, its reconnection included; zero:
	// 15 s.
	CallTimeout time.Duration
	// FailUnknown, when it returns true for an entry, makes that DM fail
	// at once when no node knows its recipient (no key bundle), as
	// `qpq send` does for the message it was given; otherwise (nil, or
	// false) it stays queued and is tried again until its TTL ends, as in
	// the chat.
	FailUnknown func(Entry) bool
	// AfterEnqueue, when set, is called after a node answered an
	// enqueue and before stored is written: a test hook (a crash at that
	// moment must not show the message twice).
	AfterEnqueue func(Entry)
	// Logger gets one line per send error; nil: discard.
	Logger *slog.Logger
}

// Sender sends an outbox's queued entries through a Transport: each is
// sealed first when it is not yet (its id is written before it is sent),
// then handed to a node until one stores it (stored) or its TTL ends
// (expired). The same envelope, with the same id, is sent each time, so a
// resend after a crash or reconnection is never shown twice.
type Sender struct {
	o    *Outbox
	t    Transport
	cfg  SenderConfig
	wake chan struct{}
}

// NewSender returns a Sender of o's entries over t.
func NewSender(o *Outbox, t Transport, cfg SenderConfig) *Sender {
	if cfg.Retry <= 0 {
		cfg.Retry = 5 * time.Second
	}
	if cfg.Idle <= 0 {
		cfg.Idle = time.Minute
	}
	if cfg.CallTimeout <= 0 {
		cfg.CallTimeout = callTimeout
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Sender{o: o, t: t, cfg: cfg, wake: make(chan struct{}, 1)}
}

// Wake makes a running Run pass at once (after an Add, or when the node is
// back). It never blocks.
func (s *Sender) Wake() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// Run passes over the outbox until ctx ends (it then returns nil): at
// once, on Wake, every Retry while something is queued, every Idle
// otherwise. Errors of the outbox file are logged and retried.
func (s *Sender) Run(ctx context.Context) error {
	for {
		left, err := s.Pass(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			s.cfg.Logger.Warn("outbox pass", "err", err)
		}
		wait := s.cfg.Idle
		if left > 0 || err != nil {
			wait = s.cfg.Retry
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-s.wake:
		case <-t.C:
		}
		t.Stop()
	}
}

// Pass expires what is past its TTL, then tries each queued entry once,
// oldest first, and returns how many are still queued. A call that does
// not reach a node ends the pass (the rest would fail the same way); the
// error returned is the outbox file's, never a send error (those are kept
// in the entry's Reason).
func (s *Sender) Pass(ctx context.Context) (queued int, err error) {
	if _, err := s.o.Expire(); err != nil {
		return 0, err
	}
	q, err := s.o.queued()
	if err != nil {
		return 0, err
	}
	for i, e := range q {
		if ctx.Err() != nil {
			return queued + len(q) - i, nil
		}
		sent, stop, err := s.one(ctx, e)
		if !sent {
			queued++
		}
		if err != nil || stop {
			return queued + len(q) - i - 1, err
		}
	}
	return queued, nil
}

// one tries entry e: sent reports it left the queue (stored or failed),
// stop that the node was not reached.
func (s *Sender) one(ctx context.Context, e Entry) (sent, stop bool, _ error) {
	if !e.Sealed() {
		cctx, cancel := context.WithTimeout(ctx, s.cfg.CallTimeout)
		b, err := s.t.LookupBundle(cctx, e.To)
		cancel()
		switch {
		case errors.Is(err, client.ErrNoBundle):
			if s.cfg.FailUnknown != nil && s.cfg.FailUnknown(e) {
				_, err := s.o.MarkFailed(e.Ref, fmt.Sprintf("no node knows the recipient's key bundle (%s): they must connect once (qpq recv) before they can be written to", e.To.Short()))
				return err == nil, false, err
			}
			return false, false, s.o.noteAttempt(e.Ref, fmt.Errorf("waiting for the recipient's key bundle: %w", err))
		case err != nil:
			s.cfg.Logger.Info("outbox: look up a bundle", "err", err)
			return false, true, s.o.noteAttempt(e.Ref, fmt.Errorf("node unreachable: %w", err))
		}
		if e, err = s.o.sealWith(e.Ref, b); err != nil {
			return false, false, err
		}
		if !e.Sealed() || e.State != Queued {
			return false, false, nil
		}
	}
	env := e.Envelope
	left := e.ExpiresAt().Sub(s.o.cfg.Now())
	if left < time.Second {
		_, err := s.o.Expire()
		return true, false, err
	}
	// The mesh keeps it only for what is left of its TTL; the id does not
	// cover the TTL, so every resend is the same envelope.
	if secs := uint32(left / time.Second); secs < env.TTLSeconds {
		env.TTLSeconds = secs
	}
	cctx, cancel := context.WithTimeout(ctx, s.cfg.CallTimeout)
	err := s.t.Enqueue(cctx, env)
	cancel()
	if err != nil {
		s.cfg.Logger.Info("outbox: enqueue", "id", e.ID.String(), "err", err)
		return false, true, s.o.noteAttempt(e.Ref, err)
	}
	if s.cfg.AfterEnqueue != nil {
		s.cfg.AfterEnqueue(e)
	}
	_, err = s.o.markStored(e.Ref, true)
	return err == nil, false, err
}
