package daemon_test

import (
	"testing"
	"time"

	"github.com/quicproquo/qpq/mesh/testkit"
	"github.com/quicproquo/qpq/node/config"
)

// Loop cover traffic: a node with loop-rate sends cover packets round 3
// relays back to itself and counts them; they come back while every
// relay passes them on, and once a relay on the line is down (packets
// through it go nowhere) the loops through it are counted lost.
func TestLoopsShowADroppingRelay(t *testing.T) {
	testkit.LeakCheck(t)
	ns := onionLineWith(t, 5, func(i int, c *config.Config) {
		if i == 0 {
			c.LoopRate = 4
		}
	})
	a := ns[0]
	testkit.WaitFor(t, 30*time.Second, "8 loops to come back", func() bool { return a.D.Status().Loops.Returned >= 8 })
	if l := a.D.Status().Loops; l.Lost != 0 {
		t.Fatalf("loops lost with every relay up: %+v", l)
	}
	ns[2].Stop()
	at := time.Now()
	if !pollUntil(60*time.Second, func() bool { return a.D.Status().Loops.Lost >= 3 }) {
		t.Fatalf("loops through the stopped relay not counted lost: %+v, onion %+v", a.D.Status().Loops, a.D.Status().Onion)
	}
	l := a.D.Status().Loops
	t.Logf("loops %+v, lost counted %v after the relay stopped", l, time.Since(at).Round(time.Second))
	for _, n := range ns[1:] {
		if n.D == nil {
			continue
		}
		if c := n.D.Status().Onion.Exited; c != 0 {
			t.Errorf("a loop was injected as a message at %s", n.ID.Fingerprint().Short())
		}
	}
}
