package cell

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/quicproquo/qpq/mesh/onion"
)

func packet(t testing.TB) []byte {
	p := make([]byte, onion.Size)
	rand.Read(p)
	return p
}

// An onion packet goes as PerPacket cells of Size bytes, out of order or
// with a chunk twice, and comes back whole; cover cells are the same size.
func TestCellsCarryAPacket(t *testing.T) {
	pkt := packet(t)
	cells, err := OnionCells(7, pkt)
	if err != nil {
		t.Fatal(err)
	}
	if len(CoverCell()) != Size {
		t.Fatalf("a cover cell is %d bytes", len(CoverCell()))
	}
	a := newAssembler()
	var got []byte
	for _, i := range []int{2, 0, 0, 3, 1} {
		if len(cells[i]) != Size {
			t.Fatalf("cell %d is %d bytes, want %d", i, len(cells[i]), Size)
		}
		p, err := Parse(cells[i])
		if err != nil {
			t.Fatal(err)
		}
		if out, _ := a.add(p, time.Now()); out != nil {
			got = out
		}
	}
	if !bytes.Equal(got, pkt) {
		t.Fatal("the reassembled packet differs")
	}
	if _, err := OnionCells(1, pkt[1:]); !errors.Is(err, ErrCell) {
		t.Errorf("a short packet was cut: %v", err)
	}
}

func TestParseRefusesOthers(t *testing.T) {
	for name, b := range map[string][]byte{
		"short": make([]byte, Size-1), "long": make([]byte, Size+1),
		"kind":  append([]byte{9}, make([]byte, Size-1)...),
		"index": func() []byte { c := make([]byte, Size); c[0], c[9] = byte(Onion), PerPacket; return c }(),
	} {
		if _, err := Parse(b); !errors.Is(err, ErrCell) {
			t.Errorf("%s: %v", name, err)
		}
	}
}

// Half-received packets are bounded: the oldest goes first past
// maxPartial, and any goes after partialLife.
func TestAssemblerIsBounded(t *testing.T) {
	a := newAssembler()
	t0 := time.Now()
	dropped := 0
	for i := range maxPartial + 5 {
		cells, _ := OnionCells(uint64(i), packet(t))
		p, _ := Parse(cells[0])
		_, d := a.add(p, t0.Add(time.Duration(i)*time.Millisecond))
		dropped += d
	}
	if len(a.sets) != maxPartial || dropped != 5 {
		t.Fatalf("%d sets kept, %d dropped", len(a.sets), dropped)
	}
	if _, ok := a.sets[0]; ok {
		t.Error("the oldest set was kept")
	}
	cells, _ := OnionCells(99, packet(t))
	p, _ := Parse(cells[1])
	if _, d := a.add(p, t0.Add(partialLife+time.Minute)); d != maxPartial {
		t.Errorf("%d expired sets dropped, want %d", d, maxPartial)
	}
}

type sink struct {
	mu    sync.Mutex
	cells [][]byte
}

func (s *sink) send(b []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.cells = append(s.cells, b)
	return nil
}

func (s *sink) kinds() (real, cover int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, c := range s.cells {
		if Kind(c[0]) == Cover {
			cover++
		} else {
			real++
		}
	}
	return
}

// With decoys on, each tick sends one cell: a real one when one waits,
// else cover; the gaps are the Poisson clock's (mean 1/rate).
func TestSenderReplacesCoverWithReal(t *testing.T) {
	s := &sink{}
	var mu sync.Mutex
	var gaps []time.Duration
	ticks := make(chan struct{})
	snd := NewSender(SenderOptions{Send: s.send, Rate: 10, Seed: 1, Sleep: func(ctx context.Context, d time.Duration) bool {
		mu.Lock()
		gaps = append(gaps, d)
		mu.Unlock()
		select {
		case <-ticks:
			return true
		case <-ctx.Done():
			return false
		}
	}})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); snd.Run(ctx) }()
	tick := func(n int) {
		for range n {
			ticks <- struct{}{}
		}
	}
	tick(3)
	cells, _ := OnionCells(1, packet(t))
	if err := snd.Enqueue(cells); err != nil {
		t.Fatal(err)
	}
	tick(6)
	ticks <- struct{}{} // the 10th cell is out once the 11th wait begins
	cancel()
	<-done
	if real, cover := s.kinds(); real != 4 || cover != 6 {
		t.Fatalf("%d real and %d cover cells, want 4 and 6", real, cover)
	}
	if st := snd.Stats(); st.Real != 4 || st.Cover != 6 {
		t.Errorf("stats %+v", st)
	}
	var sum time.Duration
	for _, g := range gaps {
		sum += g
	}
	if mean := sum / time.Duration(len(gaps)); mean < 20*time.Millisecond || mean > 500*time.Millisecond {
		t.Errorf("mean gap %v over %d ticks, far from 100ms", mean, len(gaps))
	}
}

// With decoys off nothing is sent but real cells, at once; a packet that
// does not fit the queue is refused whole.
func TestSenderWithoutDecoys(t *testing.T) {
	s := &sink{}
	block := make(chan struct{})
	snd := NewSender(SenderOptions{Send: func(b []byte) error { <-block; return s.send(b) }})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); snd.Run(ctx) }()
	cells, _ := OnionCells(1, packet(t))
	n := 0
	for snd.Enqueue(cells) == nil {
		n++
	}
	if n < QueueCells/PerPacket || n > QueueCells/PerPacket+1 {
		t.Fatalf("%d packets queued before refusal, want about %d", n, QueueCells/PerPacket)
	}
	close(block)
	deadline := time.Now().Add(5 * time.Second)
	for {
		if real, _ := s.kinds(); real == n*PerPacket {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("queued cells were not sent")
		}
		time.Sleep(time.Millisecond)
	}
	cancel()
	<-done
	if _, cover := s.kinds(); cover != 0 {
		t.Errorf("%d cover cells with decoys off", cover)
	}
	if snd.Stats().Refused != 1 {
		t.Errorf("stats %+v", snd.Stats())
	}
}

// A neighbour's cells beyond the rate are dropped, cover and real alike;
// cover never reaches OnPacket.
func TestReceiverLimitsAndDropsCover(t *testing.T) {
	now := time.Now()
	var pkts [][]byte
	r := NewReceiver(ReceiverOptions{OnPacket: func(p []byte) { pkts = append(pkts, p) }, Rate: 10, Burst: 20, Now: func() time.Time { return now }})
	for range 30 {
		r.handle(CoverCell())
	}
	if st := r.Stats(); st.Cover != 20 || st.Limited != 10 || len(pkts) != 0 {
		t.Fatalf("stats %+v, %d packets", st, len(pkts))
	}
	now = now.Add(time.Second) // 10 more tokens
	pkt := packet(t)
	cells, _ := OnionCells(5, pkt)
	for _, c := range cells {
		r.handle(c)
	}
	if len(pkts) != 1 || !bytes.Equal(pkts[0], pkt) {
		t.Fatalf("%d packets", len(pkts))
	}
	r.handle(make([]byte, 10))
	if r.Stats().Bad != 1 {
		t.Errorf("stats %+v", r.Stats())
	}
}

func FuzzParse(f *testing.F) {
	cells, _ := OnionCells(3, make([]byte, onion.Size))
	f.Add(cells[0])
	f.Add(CoverCell())
	f.Add([]byte{1})
	f.Fuzz(func(t *testing.T, b []byte) {
		a := newAssembler()
		p, err := Parse(b)
		if err != nil {
			if !errors.Is(err, ErrCell) {
				t.Fatalf("refused without ErrCell: %v", err)
			}
			return
		}
		if len(b) != Size {
			t.Fatalf("took %d bytes", len(b))
		}
		if p.Kind == Onion {
			if len(p.Data) != Chunk {
				t.Fatalf("chunk of %d bytes", len(p.Data))
			}
			a.add(p, time.Now())
		}
	})
}
