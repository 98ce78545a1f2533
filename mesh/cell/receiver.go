package cell

import (
	"context"
	"sync/atomic"
	"time"
)

// ReceiverOptions configure a Receiver.
type ReceiverOptions struct {
	// Receive waits for the link's next datagram
	// (quic.Conn.ReceiveDatagram).
	Receive func(ctx context.Context) ([]byte, error)
	// OnPacket takes each whole onion packet received. It must not block
	// for long (the relay hands packets to its own workers).
	OnPacket func(pkt []byte)
	// OnStream takes each stream cell (Stream.Receive); without it
	// stream cells are counted bad.
	OnStream func(p Parsed)
	// Rate and Burst bound the cells per second a neighbour may send,
	// cover and real alike; cells beyond are dropped and counted.
	Rate, Burst float64
	// Now is the clock (tests); nil uses time.Now.
	Now func() time.Time
}

// ReceiverStats count what a Receiver got.
type ReceiverStats struct {
	Cells, Cover, Packets, Limited, Bad, Abandoned int64
}

// Plus is the sum of two links' counts.
func (s ReceiverStats) Plus(o ReceiverStats) ReceiverStats {
	return ReceiverStats{Cells: s.Cells + o.Cells, Cover: s.Cover + o.Cover, Packets: s.Packets + o.Packets,
		Limited: s.Limited + o.Limited, Bad: s.Bad + o.Bad, Abandoned: s.Abandoned + o.Abandoned}
}

// Receiver reads one link's incoming cells. Run owns its goroutine.
type Receiver struct {
	o   ReceiverOptions
	asm *assembler

	tokens float64
	last   time.Time

	cells, cover, packets, limited, bad, abandoned atomic.Int64
}

// NewReceiver makes a link's receiver; call Run.
func NewReceiver(o ReceiverOptions) *Receiver {
	if o.Now == nil {
		o.Now = time.Now
	}
	return &Receiver{o: o, asm: newAssembler(), tokens: o.Burst, last: o.Now()}
}

// Stats returns the counts so far.
func (r *Receiver) Stats() ReceiverStats {
	return ReceiverStats{Cells: r.cells.Load(), Cover: r.cover.Load(), Packets: r.packets.Load(),
		Limited: r.limited.Load(), Bad: r.bad.Load(), Abandoned: r.abandoned.Load()}
}

// Run reads cells until ctx ends or the link does.
func (r *Receiver) Run(ctx context.Context) {
	for {
		b, err := r.o.Receive(ctx)
		if err != nil {
			return
		}
		r.handle(b)
	}
}

func (r *Receiver) handle(b []byte) {
	now := r.o.Now()
	r.tokens = min(r.o.Burst, r.tokens+now.Sub(r.last).Seconds()*r.o.Rate)
	r.last = now
	if r.tokens < 1 {
		r.limited.Add(1)
		return
	}
	r.tokens--
	p, err := Parse(b)
	if err != nil {
		r.bad.Add(1)
		return
	}
	r.cells.Add(1)
	if p.Kind == Cover {
		r.cover.Add(1) // dropped: never stored, forwarded or logged
		return
	}
	if p.Kind == StreamKind {
		if r.o.OnStream == nil {
			r.bad.Add(1)
			return
		}
		r.o.OnStream(p)
		return
	}
	pkt, dropped := r.asm.add(p, now)
	r.abandoned.Add(int64(dropped))
	if pkt != nil {
		r.packets.Add(1)
		r.o.OnPacket(pkt)
	}
}
