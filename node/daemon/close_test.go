package daemon

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/quicproquo/qpq/mesh/testkit"
)

// A node closing while its neighbours probe it (health calls back to
// back) shuts down within a deadline, every time: closing a link waits
// for the calls in progress on it, so none of them may wait for the lock
// Close holds.
func TestCloseWhileNeighboursProbe(t *testing.T) {
	testkit.LeakCheck(t)
	const neighbours, rounds = 8, 30
	for round := range rounds {
		d := newDaemon(t, nil)
		var peers []*fakePeer
		for range neighbours {
			peers = append(peers, dialPeer(t, d))
		}
		ctx, stop := context.WithCancel(context.Background())
		var wg sync.WaitGroup
		for _, p := range peers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for ctx.Err() == nil {
					pctx, cancel := context.WithTimeout(ctx, time.Second)
					err := p.l.Probe(pctx)
					cancel()
					if err != nil {
						return // the node went away
					}
				}
			}()
		}
		closed := make(chan struct{})
		go func() {
			defer close(closed)
			d.Close()
		}()
		select {
		case <-closed:
		case <-time.After(5 * time.Second):
			t.Fatalf("round %d: Close did not return within 5s while %d neighbours probed", round, neighbours)
		}
		stop()
		wg.Wait()
	}
}
