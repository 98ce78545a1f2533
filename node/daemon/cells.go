package daemon

import (
	"context"
	crand "crypto/rand"
	"encoding/binary"
	"os"
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/quicproquo/qpq/mesh/cell"
	"github.com/quicproquo/qpq/mesh/identity"
	"github.com/quicproquo/qpq/mesh/link"
	"github.com/quicproquo/qpq/node/control"
)

const (
	// cellRecvRate and cellRecvBurst bound the cells a neighbour may send
	// us a second, cover and real alike (over MaxDecoyRate, so a
	// neighbour at the highest decoy rate still has room for real ones).
	cellRecvRate  = 200
	cellRecvBurst = 400
)

// cellLink is one link's cell stream (mesh/cell): onion packets to the
// neighbour go here, and with decoys on, cover fills the gaps.
type cellLink struct {
	snd  *cell.Sender
	rcv  *cell.Receiver
	next atomic.Uint64 // the next packet id
}

// cellTotals keep the counts of links that are gone.
type cellTotals struct {
	mu  sync.Mutex
	snd cell.Stats
	rcv cell.ReceiverStats
}

// startCells runs l's cell sender and receiver until the returned stop
// is called (runLink's owner, when the link ends).
func (d *Daemon) startCells(l *link.Link) (stop func()) {
	fp := l.Peer()
	c := &cellLink{
		snd: cell.NewSender(cell.SenderOptions{Send: l.SendCell, Rate: d.cfg.DecoyRate, Seed: testDecoySeed()}),
		rcv: cell.NewReceiver(cell.ReceiverOptions{Receive: l.ReceiveCell, Rate: cellRecvRate, Burst: cellRecvBurst,
			OnPacket: func(pkt []byte) { d.onion.receive("relay "+fp.String(), pkt) }}),
	}
	var b [8]byte
	crand.Read(b[:])
	c.next.Store(binary.BigEndian.Uint64(b[:]))
	ctx, cancel := context.WithCancel(d.ctx)
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); c.snd.Run(ctx) }()
	go func() { defer wg.Done(); c.rcv.Run(ctx) }()
	d.mu.Lock()
	d.cells[fp] = c
	d.mu.Unlock()
	return func() {
		cancel()
		wg.Wait()
		d.mu.Lock()
		if d.cells[fp] == c {
			delete(d.cells, fp)
		}
		d.mu.Unlock()
		d.cellsGone.add(c)
	}
}

func (t *cellTotals) add(c *cellLink) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.snd, t.rcv = t.snd.Plus(c.snd.Stats()), t.rcv.Plus(c.rcv.Stats())
}

// sendCells hands an onion packet to the link to next as cells, and
// reports whether it took it (there is such a link and its queue had
// room).
func (d *Daemon) sendCells(next identity.Fingerprint, pkt []byte) bool {
	d.mu.Lock()
	c := d.cells[next]
	d.mu.Unlock()
	if c == nil {
		return false
	}
	cells, err := cell.OnionCells(c.next.Add(1), pkt)
	if err != nil {
		return false
	}
	return c.snd.Enqueue(cells) == nil
}

// cellStats sums every link's cell counts, past and present.
func (d *Daemon) cellStats() control.Cells {
	d.cellsGone.mu.Lock()
	s, r := d.cellsGone.snd, d.cellsGone.rcv
	d.cellsGone.mu.Unlock()
	d.mu.Lock()
	links := 0
	for _, c := range d.cells {
		links++
		s, r = s.Plus(c.snd.Stats()), r.Plus(c.rcv.Stats())
	}
	d.mu.Unlock()
	return control.Cells{DecoyRate: d.cfg.DecoyRate, Links: links,
		SentReal: s.Real, SentCover: s.Cover, QueueFull: s.Refused, SendFailed: s.Failed,
		Received: r.Cells, ReceivedCover: r.Cover, Packets: r.Packets, Limited: r.Limited, Bad: r.Bad, Abandoned: r.Abandoned}
}

// testDecoySeed is QPQ_TEST_DECOY_SEED: tests fix the Poisson clock's
// intervals with it, so a statistical check of a capture is repeatable.
// Unset (always, outside tests), each link draws its own.
func testDecoySeed() uint64 {
	v, _ := strconv.ParseUint(os.Getenv("QPQ_TEST_DECOY_SEED"), 10, 64)
	return v
}
