package cell

import (
	"bytes"
	"io"
	"math/rand/v2"
	"sync"
	"testing"
	"time"
)

// streamPair joins two streams by a lossy, reordering line driven by
// explicit ticks on a fake clock (the Sender's Poisson ticks are what
// drive a real stream; here the test plays them).
type streamPair struct {
	t      *testing.T
	now    time.Time
	a, b   *Stream
	rnd    *rand.Rand
	loss   float64
	inAir  [][2]any // cell, destination
	ticks  int
	cellsN int
}

func newStreamPair(t *testing.T, loss float64, seed uint64) *streamPair {
	p := &streamPair{t: t, now: time.Unix(1000, 0), rnd: rand.New(rand.NewPCG(seed, 1)), loss: loss}
	clock := func() time.Time { return p.now }
	p.a, p.b = NewStream(clock), NewStream(clock)
	return p
}

// tick lets each side send one cell (if it has one), delivers what is in
// the air in a shuffled order, losing some, and moves the clock on.
func (p *streamPair) tick() {
	p.ticks++
	for _, s := range []*Stream{p.a, p.b} {
		if c := s.Next(); c != nil {
			p.cellsN++
			if len(c) != Size {
				p.t.Fatalf("stream cell of %d bytes, want %d", len(c), Size)
			}
			dst := p.b
			if s == p.b {
				dst = p.a
			}
			p.inAir = append(p.inAir, [2]any{c, dst})
		}
	}
	p.rnd.Shuffle(len(p.inAir), func(i, j int) { p.inAir[i], p.inAir[j] = p.inAir[j], p.inAir[i] })
	// Deliver all but a random few, which stay in the air (reordering).
	keep := p.inAir[:0]
	var deliver [][2]any
	for _, x := range p.inAir {
		if p.rnd.Float64() < 0.2 {
			keep = append(keep, x)
		} else {
			deliver = append(deliver, x)
		}
	}
	p.inAir = keep
	for _, x := range deliver {
		if p.rnd.Float64() < p.loss {
			continue
		}
		c, err := Parse(x[0].([]byte))
		if err != nil {
			p.t.Fatalf("parse a stream cell: %v", err)
		}
		x[1].(*Stream).Receive(c)
	}
	p.now = p.now.Add(50 * time.Millisecond)
}

func TestStreamDeliversInOrderOverALossyLine(t *testing.T) {
	for _, loss := range []float64{0, 0.1, 0.3} {
		p := newStreamPair(t, loss, 7)
		want := make([]byte, 200_000)
		for i := range want {
			want[i] = byte(i*7 + i/1000)
		}
		back := []byte("an answer the other way")
		var got bytes.Buffer
		var wg sync.WaitGroup
		wg.Add(3)
		go func() { defer wg.Done(); p.a.Write(want) }()
		go func() { defer wg.Done(); p.b.Write(back) }()
		done := make(chan struct{})
		go func() {
			defer wg.Done()
			buf := make([]byte, 3000)
			for got.Len() < len(want) {
				n, err := p.b.Read(buf)
				if err != nil {
					return
				}
				got.Write(buf[:n])
			}
			close(done)
		}()
		for finished := false; !finished; {
			select {
			case <-done:
				finished = true
			default:
				if p.ticks > 100_000 {
					t.Fatalf("loss %.1f: %d of %d bytes through after %d ticks", loss, got.Len(), len(want), p.ticks)
				}
				p.tick()
				time.Sleep(10 * time.Microsecond) // let the writer and reader run
			}
		}
		if !bytes.Equal(got.Bytes(), want) {
			t.Fatalf("loss %.1f: bytes through differ from bytes written", loss)
		}
		rb := make([]byte, len(back))
		if _, err := io.ReadFull(p.a, rb); err != nil || !bytes.Equal(rb, back) {
			t.Fatalf("loss %.1f: answer %q, %v", loss, rb, err)
		}
		p.a.Close()
		p.b.Close()
		wg.Wait()
		st := p.a.Stats()
		t.Logf("loss %.1f: %d ticks, %d data cells (min %d), %d resent", loss, p.ticks, st.Sent, (len(want)+StreamData-1)/StreamData, st.Resent)
		if loss > 0 && st.Resent == 0 {
			t.Errorf("loss %.1f: nothing resent", loss)
		}
	}
}

func TestStreamIdleSendsNothing(t *testing.T) {
	s := NewStream(nil)
	if c := s.Next(); c != nil {
		t.Fatalf("an idle stream sent a cell")
	}
}

func TestStreamCloseUnblocks(t *testing.T) {
	s := NewStream(nil)
	errs := make(chan error, 2)
	go func() { _, err := s.Read(make([]byte, 10)); errs <- err }()
	go func() { _, err := s.Write(make([]byte, 3*streamBuf)); errs <- err }()
	time.Sleep(20 * time.Millisecond)
	s.Close()
	s.Close()
	for range 2 {
		select {
		case err := <-errs:
			if err == nil {
				t.Fatalf("a read or write on a closed stream returned no error")
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("Close left a read or write waiting")
		}
	}
}

func TestStreamBoundsWhatAPeerMakesItHold(t *testing.T) {
	s := NewStream(nil)
	// A peer sends cells far ahead of the window, again and again, and
	// acknowledges what was never sent: nothing of it is held.
	for i := range uint32(10_000) {
		c := Parsed{Kind: StreamKind, Seq: 1000 + i, Ack: 5000 + i, Data: make([]byte, StreamData)}
		s.Receive(c)
	}
	if len(s.ooo) != 0 || len(s.readBuf) != 0 {
		t.Fatalf("held %d cells out of order and %d bytes for a peer that sent only beyond the window", len(s.ooo), len(s.readBuf))
	}
	// Within the window but never the next one: at most StreamWindow held.
	for i := range uint32(StreamWindow * 3) {
		s.Receive(Parsed{Kind: StreamKind, Seq: 1 + i, Data: []byte{1}})
	}
	if len(s.ooo) > StreamWindow {
		t.Fatalf("held %d cells out of order, window %d", len(s.ooo), StreamWindow)
	}
	if st := s.Stats(); st.Dropped == 0 {
		t.Fatalf("no cell counted dropped: %+v", st)
	}
}

func TestStreamRoomFollowsTheRate(t *testing.T) {
	s := NewStream(nil)
	if !s.Room(2000, 10, 5*time.Second) {
		t.Fatalf("no room for 2,000 bytes at 10 cells/s")
	}
	if s.Room(20*StreamData, 1, 5*time.Second) {
		t.Fatalf("room for 20 cells at 1 cell/s within 5 s")
	}
	if s.Stats().Overflow != 1 {
		t.Fatalf("overflow %d, want 1", s.Stats().Overflow)
	}
}

// FuzzStreamReceive feeds a stream cells a peer made up: each is taken
// or refused whole, nothing panics, what the stream holds stays within
// its window and buffers, and what it sends back is a cell.
func FuzzStreamReceive(f *testing.F) {
	s := NewStream(nil)
	s.Write([]byte("seed"))
	f.Add(s.Next(), uint32(0))
	f.Add(CoverCell(), uint32(5))
	f.Add([]byte{2, 0, 0, 0, 1}, uint32(1<<31))
	f.Fuzz(func(t *testing.T, b []byte, shift uint32) {
		s := NewStream(nil)
		s.Write(make([]byte, 3*StreamData))
		for range 3 {
			s.Next()
		}
		p, err := Parse(b)
		if err != nil || p.Kind != StreamKind {
			return
		}
		s.Receive(p)
		p.Seq += shift
		p.Ack += shift
		s.Receive(p)
		if len(s.ooo) > StreamWindow || len(s.readBuf) > streamBuf || len(s.flight) > StreamWindow {
			t.Fatalf("holds %d out of order, %d bytes unread, %d in flight", len(s.ooo), len(s.readBuf), len(s.flight))
		}
		if c := s.Next(); c != nil && len(c) != Size {
			t.Fatalf("answered with %d bytes", len(c))
		}
	})
}

// A peer that stops acknowledging: the cell is sent again with the
// timeout doubling each time, and after DeadAfter the stream closes
// (its owner ends the link) instead of holding what waits for the peer.
func TestStreamBacksOffThenClosesWhenThePeerGoesQuiet(t *testing.T) {
	now := time.Unix(1000, 0)
	s := NewStream(func() time.Time { return now })
	s.Write([]byte("hello"))
	if s.Next() == nil {
		t.Fatal("nothing sent")
	}
	var resent []time.Duration
	start := now
	for now.Sub(start) < 2*DeadAfter {
		now = now.Add(100 * time.Millisecond)
		if c := s.Next(); c != nil {
			resent = append(resent, now.Sub(start))
		}
	}
	if len(resent) < 3 || len(resent) > 6 {
		t.Fatalf("sent again at %v: want a few times, backing off", resent)
	}
	for i := 2; i < len(resent); i++ {
		if resent[i]-resent[i-1] < resent[i-1]-resent[i-2] {
			t.Fatalf("sent again at %v: the gaps do not grow", resent)
		}
	}
	if _, err := s.Write([]byte("x")); err == nil {
		t.Fatal("the stream still takes writes after the peer went quiet")
	}
	if s.Stats().Dead != 1 {
		t.Fatalf("stats %+v, want one dead", s.Stats())
	}
}

// A cell acknowledged selectively, then cumulatively once the gap before
// it is filled, is timed once: the wait for the gap does not count as
// its round trip.
func TestStreamTimesASackedCellOnce(t *testing.T) {
	now := time.Unix(1000, 0)
	a := NewStream(func() time.Time { return now })
	b := NewStream(func() time.Time { return now })
	a.Write(make([]byte, 2*StreamData))
	first, second := a.Next(), a.Next()
	now = now.Add(100 * time.Millisecond)
	p2, _ := Parse(second)
	b.Receive(p2) // the first is lost
	ack, _ := Parse(b.Next())
	a.Receive(ack) // sacks the second: one sample of 100 ms
	rto := a.rto
	now = now.Add(5 * time.Second)
	p1, _ := Parse(first)
	b.Receive(p1)
	ack, _ = Parse(b.Next())
	a.Receive(ack) // acks both: the first was sent once, 5.1 s ago
	if len(a.flight) != 0 {
		t.Fatalf("%d cells still in flight", len(a.flight))
	}
	// Only the first cell's own 5.1 s may move the estimate, not a
	// second 5.1 s sample of the sacked one.
	one := NewStream(nil)
	one.sample(100 * time.Millisecond)
	one.sample(5100 * time.Millisecond)
	if a.rto != one.rto {
		t.Fatalf("timeout %v after the acks (was %v), want %v: the sacked cell was timed twice", a.rto, rto, one.rto)
	}
}
