package daemon

import (
	"testing"
	"time"

	"github.com/quicproquo/qpq/mesh/cell"
	"github.com/quicproquo/qpq/mesh/testkit"
)

// A neighbour that floods cover cells is held to the per-link cell rate
// like one sending real cells: what is over it is dropped and counted,
// and nothing of it is stored.
func TestCoverFloodIsRateLimited(t *testing.T) {
	testkit.LeakCheck(t)
	d := newDaemon(t, nil)
	p := dialPeer(t, d)
	if !p.l.Cells() {
		t.Fatal("the link carries no cells")
	}
	testkit.WaitFor(t, 10*time.Second, "the node to run the link's cells", func() bool { return d.cellStats().Links == 1 })
	before := d.Status().Store
	start := time.Now()
	const flood = 3000
	for i := range flood {
		if err := p.l.SendCell(cell.CoverCell()); err != nil {
			t.Fatal(err)
		}
		if i%50 == 49 {
			// QUIC drops datagrams its receiver has no room for (128):
			// a short pause keeps most of the flood arriving, still
			// far over the rate.
			time.Sleep(time.Millisecond)
		}
	}
	// Wait until the counts stop moving: some datagrams may be lost.
	last := int64(-1)
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(300 * time.Millisecond) {
		st := d.cellStats()
		if n := st.Received + st.Limited; n == last {
			break
		} else {
			last = n
		}
	}
	took := time.Since(start).Seconds()
	st := d.cellStats()
	if most := cellRecvBurst + cellRecvRate*took + 10; float64(st.Received) > most {
		t.Errorf("took %d cells in %.2fs, over the %d burst and %d a second", st.Received, took, cellRecvBurst, cellRecvRate)
	}
	if st.Limited == 0 || st.ReceivedCover != st.Received || st.Packets != 0 {
		t.Errorf("cells %+v", st)
	}
	if after := d.Status().Store; after.Envelopes != before.Envelopes {
		t.Errorf("the store went from %d envelopes to %d", before.Envelopes, after.Envelopes)
	}
}
