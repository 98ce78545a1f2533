package find

import (
	"errors"
	"testing"
	"time"

	"github.com/quicproquo/qpq/mesh/identity"
)

func fpN(b byte) identity.Fingerprint {
	var fp identity.Fingerprint
	fp[0] = b
	return fp
}

func node(b byte, rtt time.Duration, trusted bool) Node {
	return Node{Addr: string(rune('a'+b)) + ":7443", FP: fpN(b), RTT: rtt, Trusted: trusted}
}

func TestAutoPicksTheLowestRTTAndSwitchesOnlyWhenClearlyAndSteadilyBetter(t *testing.T) {
	a := NewAuto(AutoConfig{})
	ms := time.Millisecond
	if n, changed, ok := a.Pick([]Node{node(1, 30*ms, true), node(2, 10*ms, true)}); !ok || !changed || n.FP != fpN(2) {
		t.Fatalf("first pick %v changed=%v ok=%v, want node 2", n.Addr, changed, ok)
	}
	// Node 1 becomes a little better: 2 ms (under 5 ms) is no reason.
	for range 3 {
		if n, changed, _ := a.Pick([]Node{node(1, 8*ms, true), node(2, 10*ms, true)}); changed || n.FP != fpN(2) {
			t.Fatalf("switched to %s for 2 ms", n.Addr)
		}
	}
	// 6 ms of 10 ms is enough, but only on the second round in a row;
	// a round in between where it is not better starts again.
	if _, changed, _ := a.Pick([]Node{node(1, 4*ms, true), node(2, 10*ms, true)}); changed {
		t.Fatal("switched after one round")
	}
	if _, changed, _ := a.Pick([]Node{node(1, 9*ms, true), node(2, 10*ms, true)}); changed {
		t.Fatal("switched when not better")
	}
	if _, changed, _ := a.Pick([]Node{node(1, 4*ms, true), node(2, 10*ms, true)}); changed {
		t.Fatal("switched after one round (the streak was broken)")
	}
	if n, changed, _ := a.Pick([]Node{node(1, 4*ms, true), node(2, 10*ms, true)}); !changed || n.FP != fpN(1) {
		t.Fatalf("after two rounds: %s changed=%v, want node 1", n.Addr, changed)
	}
	// A 20% margin: 100 ms against 110 ms is not enough although 10 ms > 5 ms.
	a.Set(node(3, 110*ms, true))
	for range 3 {
		if n, changed, _ := a.Pick([]Node{node(1, 100*ms, true), node(3, 110*ms, true)}); changed || n.FP != fpN(3) {
			t.Fatalf("switched to %s for under 20%%", n.Addr)
		}
	}
	// The current node stops answering: the best one at once.
	down := node(3, 0, true)
	down.Err = errors.New("timeout")
	if n, changed, _ := a.Pick([]Node{node(1, 100*ms, true), down}); !changed || n.FP != fpN(1) {
		t.Fatalf("current node down: %s changed=%v", n.Addr, changed)
	}
	// Nobody answers: keep the choice, not ok.
	if n, changed, ok := a.Pick([]Node{down}); ok || changed || n.FP != fpN(1) {
		t.Fatalf("nobody answers: %s changed=%v ok=%v", n.Addr, changed, ok)
	}
}

func TestAutoPrefersTrustedNodes(t *testing.T) {
	ms := time.Millisecond
	a := NewAuto(AutoConfig{})
	// A never-seen node with a far lower RTT (anyone can announce one)
	// does not win over a trusted node.
	if n, _, _ := a.Pick([]Node{node(1, 1*ms, false), node(2, 50*ms, true)}); n.FP != fpN(2) {
		t.Fatalf("picked %s, want the trusted node", n.Addr)
	}
	for range 3 {
		if n, changed, _ := a.Pick([]Node{node(1, 1*ms, false), node(2, 50*ms, true)}); changed || n.FP != fpN(2) {
			t.Fatalf("moved to the untrusted node %s", n.Addr)
		}
	}
	// With no trusted node answering, an untrusted one is picked (the
	// session then asks before authenticating to it).
	b := NewAuto(AutoConfig{})
	if n, _, ok := b.Pick([]Node{node(1, 9*ms, false), node(3, 5*ms, false)}); !ok || n.FP != fpN(3) {
		t.Fatalf("untrusted only: %s ok=%v", n.Addr, ok)
	}
	// Once a trusted node answers, it replaces an untrusted choice at once.
	if n, changed, _ := b.Pick([]Node{node(3, 5*ms, false), node(2, 50*ms, true)}); !changed || n.FP != fpN(2) {
		t.Fatalf("trusted node appeared: %s changed=%v", n.Addr, changed)
	}
}

func TestSortTrustedThenMeasuredThenRTT(t *testing.T) {
	ms := time.Millisecond
	bad := node(4, 0, true)
	bad.Err = errors.New("x")
	ns := []Node{node(1, 1*ms, false), bad, node(2, 9*ms, true), node(3, 3*ms, true)}
	Sort(ns)
	var got []byte
	for _, n := range ns {
		got = append(got, n.FP[0])
	}
	if string(got) != "\x03\x02\x04\x01" {
		t.Fatalf("order %v, want 3 2 4 1", got)
	}
	if c := Candidates(ns); len(c) != 3 || c[0].Addr != ns[0].Addr || !c[0].Trusted || c[2].Trusted || c[0].Pin != fpN(3) {
		t.Fatalf("candidates %+v", c)
	}
}
