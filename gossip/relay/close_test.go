package relay

import (
	"runtime"
	"strings"
	"sync"
	"testing"

	"github.com/quicproquo/qpq/mesh/identity"
)

// sendersRunning counts goroutines in an engine's sendLoop or syncLoop.
func sendersRunning() int {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	return strings.Count(string(buf), "relay.(*Engine).sendLoop") + strings.Count(string(buf), "relay.(*Engine).syncLoop")
}

func TestAddPeerRacingCloseLeavesNoSender(t *testing.T) {
	// A neighbour linking while the node shuts down: whichever wins, no
	// sender may run once Close has returned. Run under -race, the
	// WaitGroup also reports an Add that races Close's Wait.
	clock := newClock()
	n := newTNode(t, clock)
	st := n.st
	n.eng.Close()
	for i := range 300 {
		eng := New(Options{Store: st, Now: clock.Now})
		var wg sync.WaitGroup
		start := make(chan struct{})
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			eng.AddPeer(identity.Fingerprint{byte(i)}, newRecPeer())
		}()
		close(start)
		eng.Close()
		wg.Wait()
		// Close has returned and so has AddPeer: any sender still running
		// was started behind Close's back.
		if n := sendersRunning(); n != 0 {
			t.Fatalf("round %d: %d senders running after Close returned", i, n)
		}
	}
}
