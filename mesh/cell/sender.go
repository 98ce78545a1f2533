package cell

import (
	"context"
	crand "crypto/rand"
	"encoding/binary"
	"errors"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"
)

// QueueCells bounds the real cells waiting for their turn on a link
// (16 onion packets). Past it a packet is refused and the caller sends
// it another way at once: traffic above the decoy rate shows its timing
// either way, and it must not wait without bound.
const QueueCells = 64

// ErrBusy is a packet refused because the link's cell queue is full.
var ErrBusy = errors.New("link cell queue is full")

// SenderOptions configure a Sender.
type SenderOptions struct {
	// Send hands one cell to the link (quic.Conn.SendDatagram).
	Send func([]byte) error
	// Rate is the mean cells per second of the Poisson clock; 0 turns
	// decoys off and real cells go at once.
	Rate float64
	// Seed fixes the clock's random intervals (tests); zero draws one.
	Seed uint64
	// Sleep waits d or until ctx ends (tests may speed it up); nil uses
	// a timer.
	Sleep func(ctx context.Context, d time.Duration) bool
	// Source, when set, is asked for a cell at each tick no queued cell
	// takes (Stream.Next); nil from it means cover. Only with decoys on.
	Source func() []byte
}

// Stats count a Sender's cells.
type Stats struct {
	Real, Cover, Refused, Failed int64
}

// Plus is the sum of two links' counts.
func (s Stats) Plus(o Stats) Stats {
	return Stats{Real: s.Real + o.Real, Cover: s.Cover + o.Cover, Refused: s.Refused + o.Refused, Failed: s.Failed + o.Failed}
}

// Sender is one link's outgoing cell stream. Run owns its goroutine.
type Sender struct {
	o     SenderOptions
	rnd   *rand.Rand
	queue chan []byte
	mu    sync.Mutex // Enqueue's all-or-nothing check

	real, cover, refused, failed atomic.Int64
}

// NewSender makes a link's sender; call Run.
func NewSender(o SenderOptions) *Sender {
	seed := o.Seed
	if seed == 0 {
		var b [8]byte
		crand.Read(b[:])
		seed = binary.BigEndian.Uint64(b[:])
	}
	if o.Sleep == nil {
		o.Sleep = sleep
	}
	return &Sender{o: o, rnd: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)), queue: make(chan []byte, QueueCells)}
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// Enqueue queues all of cells (one packet's) or, when they do not all
// fit, none and returns ErrBusy.
func (s *Sender) Enqueue(cells [][]byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if QueueCells-len(s.queue) < len(cells) {
		s.refused.Add(1)
		return ErrBusy
	}
	for _, c := range cells {
		s.queue <- c
	}
	return nil
}

// Stats returns the counts so far.
func (s *Sender) Stats() Stats {
	return Stats{Real: s.real.Load(), Cover: s.cover.Load(), Refused: s.refused.Load(), Failed: s.failed.Load()}
}

// Rate is the configured mean cells per second (0: decoys off).
func (s *Sender) Rate() float64 { return s.o.Rate }

// Run sends cells until ctx ends: with decoys off each real cell at once;
// with decoys on one cell per tick of a Poisson clock, the oldest real
// cell if one waits, else a cover cell.
func (s *Sender) Run(ctx context.Context) {
	if s.o.Rate <= 0 {
		for {
			select {
			case c := <-s.queue:
				s.send(c, &s.real)
			case <-ctx.Done():
				return
			}
		}
	}
	cover := CoverCell()
	for {
		gap := time.Duration(s.rnd.ExpFloat64() / s.o.Rate * float64(time.Second))
		if !s.o.Sleep(ctx, gap) {
			return
		}
		select {
		case c := <-s.queue:
			s.send(c, &s.real)
		default:
			if s.o.Source != nil {
				if c := s.o.Source(); c != nil {
					s.send(c, &s.real)
					continue
				}
			}
			s.send(cover, &s.cover)
		}
	}
}

func (s *Sender) send(c []byte, n *atomic.Int64) {
	if err := s.o.Send(c); err != nil {
		// The link is going down, or its send queue is full: the cell
		// is lost like a datagram on the air (an onion sender retries
		// by another route).
		s.failed.Add(1)
		return
	}
	n.Add(1)
}
