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
	for range flood {
		if err := p.l.SendCell(cell.CoverCell()); err != nil {
			t.Fatal(err)
		}
	}
	testkit.WaitFor(t, 10*time.Second, "the cells to be counted", func() bool {
		st := d.cellStats()
		return st.Received+st.Limited >= flood*9/10 // datagrams may be lost on the way
	})
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
