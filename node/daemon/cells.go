package daemon

import (
	"context"
	crand "crypto/rand"
	"encoding/binary"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"capnproto.org/go/capnp/v3/rpc"

	"github.com/quicproquo/qpq/gossip/wire"
	"github.com/quicproquo/qpq/mesh/cell"
	"github.com/quicproquo/qpq/mesh/identity"
	"github.com/quicproquo/qpq/mesh/link"
	"github.com/quicproquo/qpq/node/control"
	"github.com/quicproquo/qpq/schemas"
)

const (
	// cellRecvRate and cellRecvBurst bound the cells a neighbour may send
	// us a second, cover and real alike (over MaxDecoyRate, so a
	// neighbour at the highest decoy rate still has room for real ones).
	cellRecvRate  = 200
	cellRecvBurst = 400
	// minStreamRate is the decoy rate both sides of a link need before
	// the link's message calls ride its cell stream: below it a push
	// would wait longer than the relay's push timeout for its cells. At
	// it, calls up to about 5 KiB fit streamWait (a short DM is 2 cells);
	// bigger ones go by RPC, counted.
	minStreamRate = 1.0
	// streamWait is how long a message call may wait for its cells'
	// ticks; a call that would wait longer (a burst above the decoy
	// rate, a catch-up) goes at once on the link's RPC stream, counted.
	streamWait = 5 * time.Second
)

// cellLink is one link's cell stream (mesh/cell): onion packets to the
// neighbour go here, and with decoys on, cover fills the gaps.
type cellLink struct {
	snd  *cell.Sender
	rcv  *cell.Receiver
	st   *cell.Stream   // nil unless both sides send decoys (streamed)
	msgs *wire.Messages // the message calls' way over st (nil with it)
	next atomic.Uint64  // the next packet id
}

// cellTotals keep the counts of links that are gone.
type cellTotals struct {
	mu  sync.Mutex
	snd cell.Stats
	rcv cell.ReceiverStats
	st  cell.StreamStats
}

// streamed reports whether l's message calls ride its cell stream:
// both sides speak StreamVersion and send decoys at minStreamRate or
// more (so both directions, answers too, take cover's place).
func (d *Daemon) streamed(l *link.Link) bool {
	// Our rate as hello states it (a float32), so both sides decide alike.
	own := float64(float32(d.cfg.DecoyRate))
	return l.Cells() && l.Version() >= link.StreamVersion &&
		own >= minStreamRate && l.PeerHello().DecoyRate >= minStreamRate
}

// startCells runs l's cell sender and receiver until the returned stop
// is called (runLink's owner, when the link ends). When the link is
// streamed it also runs an RPC connection over the cell stream, and
// msgs is the neighbour's MeshPeer on it for the message calls.
func (d *Daemon) startCells(l *link.Link) (stop func(), msgs *wire.Messages) {
	fp := l.Peer()
	so := cell.SenderOptions{Send: l.SendCell, Rate: d.cfg.DecoyRate, Seed: testDecoySeed()}
	ro := cell.ReceiverOptions{Receive: l.ReceiveCell, Rate: cellRecvRate, Burst: cellRecvBurst,
		OnPacket: func(pkt []byte) { d.onion.receive("relay "+fp.String(), pkt) }}
	c := &cellLink{}
	var rc *rpc.Conn
	var remote schemas.MeshPeer
	if d.streamed(l) {
		c.st = cell.NewStream(nil)
		so.Source, ro.OnStream = c.st.Next, c.st.Receive
		rc = link.NewRPCConn(c.st, d.peerBootstrap(fp), d.log)
		remote = schemas.MeshPeer(rc.Bootstrap(d.ctx))
		st, rate := c.st, d.cfg.DecoyRate
		msgs = &wire.Messages{Remote: remote, Room: func(n int) bool { return st.Room(n, rate, streamWait) }}
		c.msgs = msgs
	}
	c.snd, c.rcv = cell.NewSender(so), cell.NewReceiver(ro)
	var b [8]byte
	crand.Read(b[:])
	c.next.Store(binary.BigEndian.Uint64(b[:]))
	ctx, cancel := context.WithCancel(d.ctx)
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); c.snd.Run(ctx) }()
	go func() { defer wg.Done(); c.rcv.Run(ctx) }()
	if rc != nil {
		// The stream's RPC connection ends before the link only when
		// something broke: the peer stopped acknowledging (cell.DeadAfter)
		// or sent what RPC refuses. The link goes with it, so that the
		// peer learns, and a new link starts both afresh.
		wg.Add(1)
		go func() {
			defer wg.Done()
			select {
			case <-rc.Done():
				if ctx.Err() == nil {
					d.log.Info("link down: its message stream broke", "peer", fp)
					l.Abort(link.CodeClosing, "message stream broke")
				}
			case <-ctx.Done():
			}
		}()
	}
	d.mu.Lock()
	d.cells[fp] = c
	d.mu.Unlock()
	return func() {
		cancel()
		if rc != nil {
			// The stream first: it unblocks the RPC connection's writer,
			// so closing the connection does not wait on cells.
			c.st.Close()
			remote.Release()
			rc.Close()
		}
		wg.Wait()
		d.mu.Lock()
		if d.cells[fp] == c {
			delete(d.cells, fp)
		}
		d.mu.Unlock()
		d.cellsGone.add(c)
	}, msgs
}

func (t *cellTotals) add(c *cellLink) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.snd, t.rcv = t.snd.Plus(c.snd.Stats()), t.rcv.Plus(c.rcv.Stats())
	if c.st != nil {
		t.st = t.st.Plus(c.st.Stats())
	}
}

// peerOf is the neighbour l as the relay sees it: its message calls by
// the link's cell stream when the link is streamed.
func (d *Daemon) peerOf(l *link.Link) wire.Peer {
	p := wire.NewPeer(l.Remote(), l.Version())
	d.mu.Lock()
	c := d.cells[l.Peer()]
	d.mu.Unlock()
	if c != nil && c.msgs != nil {
		p = p.WithMessages(*c.msgs)
	}
	return p
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
	s, r, st := d.cellsGone.snd, d.cellsGone.rcv, d.cellsGone.st
	d.cellsGone.mu.Unlock()
	d.mu.Lock()
	links, streamed := 0, 0
	for _, c := range d.cells {
		links++
		s, r = s.Plus(c.snd.Stats()), r.Plus(c.rcv.Stats())
		if c.st != nil {
			streamed++
			st = st.Plus(c.st.Stats())
		}
	}
	d.mu.Unlock()
	return control.Cells{DecoyRate: d.cfg.DecoyRate, Links: links,
		SentReal: s.Real, SentCover: s.Cover, QueueFull: s.Refused, SendFailed: s.Failed,
		Received: r.Cells, ReceivedCover: r.Cover, Packets: r.Packets, Limited: r.Limited, Bad: r.Bad, Abandoned: r.Abandoned,
		Streamed: streamed, StreamSent: st.Sent, StreamResent: st.Resent, StreamReceived: st.Received, StreamOverflow: st.Overflow, StreamDead: st.Dead}
}

// testDecoySeed is QPQ_TEST_DECOY_SEED: tests fix the Poisson clock's
// intervals with it, so a statistical check of a capture is repeatable.
// Unset (always, outside tests), each link draws its own.
func testDecoySeed() uint64 {
	v, _ := strconv.ParseUint(os.Getenv("QPQ_TEST_DECOY_SEED"), 10, 64)
	return v
}
