package main

import (
	"testing"
	"time"

	"github.com/quicproquo/qpq/mesh/testkit"
)

func TestPeerExchangeLinksNodesBeyondOneHop(t *testing.T) {
	a := startNode(t, "", "--listen", loop)
	b := startNode(t, "", "--listen", loop, "--peer", a.peerArg())
	c := startNode(t, "", "--listen", loop, "--peer", b.peerArg())
	afp, cfp := a.fp(), c.fp()
	// Neither a nor c was told about the other: they learn each other's
	// signed descriptors through b and link directly.
	testkit.WaitForEvery(t, 30*time.Second, procPoll, "a and c to link by peer exchange", func() bool { return a.linkedTo(cfp) && c.linkedTo(afp) })
	via := map[string]bool{}
	for _, p := range []*proc{a, c} {
		for _, peer := range p.mustStatus().Peers {
			via[peer.Via] = true
		}
	}
	if !via["exchange"] {
		t.Fatalf("no link end says via exchange: %v", via)
	}
	testkit.WaitForEvery(t, 20*time.Second, procPoll, "a to hold one descriptor per node (3)", func() bool { return a.kind("descriptor") == 3 })
}
