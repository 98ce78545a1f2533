package main

import (
	"strings"
	"testing"
	"time"

	"github.com/quicproquo/qpq/mesh/testkit"
)

// A node learns of many nodes by peer exchange but keeps --max-links
// links, one of its picks random (DESIGN, "Finding each other"); a node
// refuses inbound links past its cap while the ones it holds stay.
func TestMaxLinksAndInboundCap(t *testing.T) {
	// The hub keeps one link of its own choosing, so it accepts at most
	// eight inbound links (the floor of the inbound cap). Spokes keep
	// only their static link to it, so they dial nobody they learn of.
	hub := startNode(t, "", "--listen", loop, "--max-links", "1")
	var spokes []*proc
	for range 6 {
		spokes = append(spokes, startNode(t, "", "--listen", loop, "--max-links", "1", "--peer", hub.peerArg()))
	}
	x := startNode(t, "", "--listen", loop, "--max-links", "4", "--peer", hub.peerArg())
	spokeFP := map[string]bool{}
	for _, s := range spokes {
		spokeFP[s.fp()] = true
	}

	// x hears of all six spokes but links to three (four with the hub).
	testkit.WaitForEvery(t, 30*time.Second, procPoll, "x to hold the six spokes' descriptors", func() bool { return x.kind("descriptor") >= 8 })
	testkit.WaitForEvery(t, 30*time.Second, procPoll, "x to fill its four links", func() bool { return len(x.mustStatus().Peers) == 4 })
	time.Sleep(2 * time.Second) // a few more descriptors and selection rounds
	st := x.mustStatus()
	if len(st.Peers) != 4 {
		t.Fatalf("x has %d links with --max-links 4", len(st.Peers))
	}
	picks := map[string]int{}
	for _, p := range st.Peers {
		switch {
		case p.Via == "static":
			if p.Pick != "" {
				t.Errorf("static link has pick %q", p.Pick)
			}
		case p.Via == "exchange" && spokeFP[p.Fingerprint] && p.Direction == "outbound":
			picks[p.Pick]++
		default:
			t.Errorf("unexpected link %+v", p)
		}
	}
	if picks["random"] != 1 || picks["rtt"] != 2 {
		t.Errorf("x's picks %v, want one random and two by RTT (--max-links 4 makes one random pick)", picks)
	}

	// The hub holds seven inbound links; two more spokes come: one fills
	// its cap of eight, the other is refused while the rest stay.
	spokes = append(spokes, startNode(t, "", "--listen", loop, "--max-links", "1", "--peer", hub.peerArg()))
	testkit.WaitForEvery(t, 20*time.Second, procPoll, "the hub to hold 8 inbound links", func() bool { return len(hub.mustStatus().Peers) == 8 })
	late := startNode(t, "", "--listen", loop, "--max-links", "1", "--peer", hub.peerArg())
	testkit.WaitForEvery(t, 20*time.Second, procPoll, "the hub to refuse the ninth inbound link", func() bool {
		return strings.Contains(hub.stderr.String(), "at the inbound cap")
	})
	if n := len(hub.mustStatus().Peers); n != 8 {
		t.Errorf("hub holds %d links after refusing one, want 8", n)
	}
	if late.linkedTo(hub.fp()) {
		t.Errorf("the ninth spoke is linked to the hub past its cap")
	}
}
