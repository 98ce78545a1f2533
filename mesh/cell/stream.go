package cell

import (
	"encoding/binary"
	"errors"
	"io"
	"sync"
	"time"
)

const (
	// StreamData is the stream bytes one cell carries.
	StreamData   = Size - streamHeader
	streamHeader = 1 + 4 + 4 + 4 + 2
	// StreamWindow bounds the cells sent and not yet acknowledged, and
	// the cells a receiver holds out of order.
	StreamWindow = 32
	// streamBuf bounds the bytes written and not yet cut into cells, and
	// the bytes received in order and not yet read.
	streamBuf = StreamWindow * StreamData
	// rtoFirst, rtoMin and rtoMax bound the retransmission timeout. Acks
	// ride the peer's own Poisson ticks, so a round trip is mostly the
	// wait for the peer's next tick; a retransmit early costs only a
	// tick that would have carried cover.
	rtoFirst = 3 * time.Second
	rtoMin   = 300 * time.Millisecond
	rtoMax   = 20 * time.Second
	// DeadAfter is how long the oldest cell may stay unacknowledged:
	// past it the peer has stopped reading the stream (or gone), and the
	// stream closes rather than hold what is queued for it.
	DeadAfter = 60 * time.Second
)

// ErrStreamClosed is a read or write on a closed stream.
var ErrStreamClosed = errors.New("cell stream closed")

// StreamStats count a stream's cells.
type StreamStats struct {
	Sent, Resent, Received, Duplicate, Dropped, Overflow int64
	// Dead counts streams closed because the peer stopped acknowledging.
	Dead int64
}

// Plus is the sum of two streams' counts.
func (s StreamStats) Plus(o StreamStats) StreamStats {
	return StreamStats{Sent: s.Sent + o.Sent, Resent: s.Resent + o.Resent, Received: s.Received + o.Received,
		Duplicate: s.Duplicate + o.Duplicate, Dropped: s.Dropped + o.Dropped, Overflow: s.Overflow + o.Overflow, Dead: s.Dead + o.Dead}
}

type outCell struct {
	seq    uint32
	data   []byte
	first  time.Time // when first sent
	sent   time.Time // when last sent
	sends  int
	sacked bool
}

// Stream is a reliable, ordered byte stream over one link's cells, for
// an RPC connection beside the link's own. It never sends on its own: the
// link's Sender asks it for a cell at each tick of its Poisson clock
// (Next), so what it sends, acknowledgements and retransmits included,
// takes the place of cover and the link's timing does not change. The
// Receiver hands it the stream cells that arrive (Receive). Memory is
// bounded: StreamWindow cells in flight and out of order, streamBuf
// bytes each way; a writer waits for room.
type Stream struct {
	now func() time.Time

	mu   sync.Mutex
	cond *sync.Cond // signalled when there is room to write, data to read, or on close

	pending []byte     // written, not yet in a cell
	flight  []*outCell // sent and not acknowledged, by sequence
	nextSeq uint32
	srtt    time.Duration
	rttvar  time.Duration
	rto     time.Duration

	recvNext uint32            // the next sequence expected
	ooo      map[uint32][]byte // received ahead of recvNext
	readBuf  []byte
	ackDue   bool
	closed   bool

	st StreamStats
}

// NewStream makes a stream; now is the clock (nil: time.Now).
func NewStream(now func() time.Time) *Stream {
	if now == nil {
		now = time.Now
	}
	s := &Stream{now: now, rto: rtoFirst, ooo: map[uint32][]byte{}}
	s.cond = sync.NewCond(&s.mu)
	return s
}

// before reports whether sequence a comes before b (serial arithmetic).
func before(a, b uint32) bool { return int32(a-b) < 0 }

// Write queues p for the peer, waiting while the send buffer is full.
// It returns ErrStreamClosed once the stream is closed.
func (s *Stream) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for n < len(p) {
		for !s.closed && len(s.pending) >= streamBuf {
			s.cond.Wait()
		}
		if s.closed {
			return n, ErrStreamClosed
		}
		k := min(len(p)-n, streamBuf-len(s.pending))
		s.pending = append(s.pending, p[n:n+k]...)
		n += k
	}
	return n, nil
}

// Read returns bytes received in order, waiting for some; io.EOF once
// the stream is closed and nothing is left.
func (s *Stream) Read(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for !s.closed && len(s.readBuf) == 0 {
		s.cond.Wait()
	}
	if len(s.readBuf) == 0 {
		return 0, io.EOF
	}
	n := copy(p, s.readBuf)
	s.readBuf = append(s.readBuf[:0], s.readBuf[n:]...)
	s.deliver()
	return n, nil
}

// Close ends the stream: waiting reads and writes return. Safe to call
// more than once. The peer is not told: whoever owns the stream ends the
// link with it (a stream is one link's).
func (s *Stream) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	s.cond.Broadcast()
	return nil
}

// Room reports whether n more bytes would be sent within about wait at
// rate cells a second; a caller sends what does not fit another way at
// once (counted as overflow), so that a burst above the decoy rate does
// not wait without bound.
func (s *Stream) Room(n int, rate float64, wait time.Duration) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	budget := min(streamBuf, int(rate*wait.Seconds())*StreamData)
	queued := len(s.pending) + len(s.flight)*StreamData
	if s.closed || queued+n > budget {
		s.st.Overflow++
		return false
	}
	return true
}

// Stats returns the counts so far.
func (s *Stream) Stats() StreamStats {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.st
}

// Next returns the stream's next cell for the link, or nil when it has
// nothing to send: the oldest cell unacknowledged past the timeout, else
// new data while the window has room, else an acknowledgement due.
func (s *Stream) Next() []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	now := s.now()
	if len(s.flight) > 0 && now.Sub(s.flight[0].first) > DeadAfter {
		s.st.Dead++
		s.closed = true
		s.cond.Broadcast()
		return nil
	}
	oldest := true
	for _, c := range s.flight {
		if c.sacked {
			continue
		}
		if now.Sub(c.sent) >= s.rto {
			c.sent = now
			c.sends++
			s.st.Resent++
			if oldest {
				// Back off (RFC 6298 5.5) until a cell sent once is
				// acked: the round trip may have outgrown the timeout.
				s.rto = min(rtoMax, 2*s.rto)
			}
			return s.encode(c.seq, c.data)
		}
		oldest = false
	}
	if len(s.pending) > 0 && len(s.flight) < StreamWindow {
		k := min(len(s.pending), StreamData)
		c := &outCell{seq: s.nextSeq, data: append([]byte(nil), s.pending[:k]...), first: now, sent: now, sends: 1}
		s.pending = append(s.pending[:0], s.pending[k:]...)
		s.nextSeq++
		s.flight = append(s.flight, c)
		s.st.Sent++
		s.cond.Broadcast()
		return s.encode(c.seq, c.data)
	}
	if s.ackDue {
		return s.encode(0, nil)
	}
	return nil
}

// encode makes a stream cell with the current acknowledgement.
func (s *Stream) encode(seq uint32, data []byte) []byte {
	c := make([]byte, Size)
	c[0] = byte(StreamKind)
	binary.BigEndian.PutUint32(c[1:5], seq)
	binary.BigEndian.PutUint32(c[5:9], s.recvNext)
	var sack uint32
	for i := range uint32(32) {
		if _, ok := s.ooo[s.recvNext+1+i]; ok {
			sack |= 1 << i
		}
	}
	binary.BigEndian.PutUint32(c[9:13], sack)
	binary.BigEndian.PutUint16(c[13:15], uint16(len(data)))
	copy(c[streamHeader:], data)
	s.ackDue = false
	return c
}

// Receive takes a stream cell from the peer (a Parsed of StreamKind).
func (s *Stream) Receive(p Parsed) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return
	}
	s.acked(p.Ack, p.Sack)
	if len(p.Data) == 0 {
		return
	}
	s.st.Received++
	s.ackDue = true
	switch d := p.Seq - s.recvNext; {
	case before(p.Seq, s.recvNext):
		s.st.Duplicate++
	case d >= StreamWindow:
		s.st.Dropped++ // beyond the window: the peer sends it again
	default:
		if _, ok := s.ooo[p.Seq]; ok {
			s.st.Duplicate++
			return
		}
		s.ooo[p.Seq] = append([]byte(nil), p.Data...)
		s.deliver()
	}
}

// deliver moves in-order data from ooo to readBuf while it has room.
func (s *Stream) deliver() {
	moved := false
	for {
		d, ok := s.ooo[s.recvNext]
		if !ok || len(s.readBuf)+len(d) > streamBuf {
			break
		}
		delete(s.ooo, s.recvNext)
		s.readBuf = append(s.readBuf, d...)
		s.recvNext++
		moved = true
	}
	if moved {
		s.ackDue = true
		s.cond.Broadcast()
	}
}

// acked drops the cells the peer has (before ack, or marked in sack)
// and samples the round trip from cells sent once.
func (s *Stream) acked(ack, sack uint32) {
	if before(s.nextSeq, ack) {
		return // acknowledges what we never sent
	}
	now := s.now()
	keep := s.flight[:0]
	for _, c := range s.flight {
		if before(c.seq, ack) {
			if c.sends == 1 && !c.sacked { // a sacked cell was timed then
				s.sample(now.Sub(c.sent))
			}
			continue
		}
		if i := c.seq - ack - 1; c.seq != ack && i < 32 && sack&(1<<i) != 0 && !c.sacked {
			c.sacked = true
			if c.sends == 1 {
				s.sample(now.Sub(c.sent))
			}
		}
		keep = append(keep, c)
	}
	if len(keep) != len(s.flight) {
		clear(s.flight[len(keep):])
		s.cond.Broadcast()
	}
	s.flight = keep
}

// sample updates the round-trip estimate and timeout (RFC 6298).
func (s *Stream) sample(rtt time.Duration) {
	if s.srtt == 0 {
		s.srtt, s.rttvar = rtt, rtt/2
	} else {
		diff := s.srtt - rtt
		if diff < 0 {
			diff = -diff
		}
		s.rttvar = (3*s.rttvar + diff) / 4
		s.srtt = (7*s.srtt + rtt) / 8
	}
	s.rto = min(rtoMax, max(rtoMin, s.srtt+4*s.rttvar))
}
