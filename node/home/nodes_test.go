package home

import (
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/quicproquo/qpq/mesh/identity"
)

func nodeFP(b byte) identity.Fingerprint {
	var fp identity.Fingerprint
	fp[0], fp[1] = b, 1
	return fp
}

func TestRememberedNodesNewestFirstAndTrustedByKey(t *testing.T) {
	h := Home{Dir: t.TempDir()}
	if ns, err := h.Nodes(); err != nil || len(ns) != 0 {
		t.Fatalf("no file: %v %v", ns, err)
	}
	// A file written by an older binary, with a damaged line.
	old := "10.0.0.1:7443 " + nodeFP(1).String() + "\ngarbage\n10.0.0.2:7443 " + nodeFP(2).String() + "\n"
	if err := os.WriteFile(h.Path(NodesFile), []byte(old), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := h.RememberNode("10.0.0.3:7443", nodeFP(3)); err != nil {
		t.Fatal(err)
	}
	if err := h.RememberNode("10.0.0.1:7443", nodeFP(4)); err != nil { // replaced: now the newest
		t.Fatal(err)
	}
	ns, err := h.Nodes()
	if err != nil || len(ns) != 3 || ns[0].Addr != "10.0.0.1:7443" || ns[0].Fingerprint != nodeFP(4) || ns[1].Addr != "10.0.0.3:7443" || ns[2].Addr != "10.0.0.2:7443" {
		t.Fatalf("nodes %+v %v", ns, err)
	}
	if fp, ok := h.KnownNode("10.0.0.2:7443"); !ok || fp != nodeFP(2) {
		t.Fatalf("KnownNode: %v %v", fp, ok)
	}
	if !h.TrustsNode(nodeFP(3)) || h.TrustsNode(nodeFP(1)) {
		t.Fatal("TrustsNode: want the key remembered now, not the replaced one")
	}
	if err := h.ForgetNode("10.0.0.3:7443"); err != nil || h.TrustsNode(nodeFP(3)) {
		t.Fatalf("ForgetNode: %v", err)
	}
}

func TestRememberedNodesBoundedAndADamagedLineHidesNothing(t *testing.T) {
	h := Home{Dir: t.TempDir()}
	// An over-long damaged line (longer than bufio.Scanner's 64 KiB) before
	// a good one: the good one must stay readable and survive a rewrite.
	long := strings.Repeat("x", 100<<10)
	if err := os.WriteFile(h.Path(NodesFile), []byte(long+"\n10.0.0.9:7443 "+nodeFP(9).String()+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if fp, ok := h.KnownNode("10.0.0.9:7443"); !ok || fp != nodeFP(9) {
		t.Fatalf("KnownNode after a damaged line: %v %v", fp, ok)
	}
	if err := h.RememberNode("10.0.1.1:7443", nodeFP(1)); err != nil {
		t.Fatal(err)
	}
	if fp, ok := h.KnownNode("10.0.0.9:7443"); !ok || fp != nodeFP(9) {
		t.Fatal("RememberNode lost the node after a damaged line")
	}
	for i := 0; i < 3*MaxNodes; i++ {
		if err := h.RememberNode(fmt.Sprintf("10.0.2.%d:7443", i), nodeFP(byte(i))); err != nil {
			t.Fatal(err)
		}
	}
	ns, err := h.Nodes()
	if err != nil || len(ns) != MaxNodes {
		t.Fatalf("after %d remembered: %d nodes, %v; want %d", 3*MaxNodes+2, len(ns), err, MaxNodes)
	}
	if want := fmt.Sprintf("10.0.2.%d:7443", 3*MaxNodes-1); ns[0].Addr != want {
		t.Fatalf("newest is %s, want %s", ns[0].Addr, want)
	}
	b, _ := os.ReadFile(h.Path(NodesFile))
	if n := strings.Count(string(b), "\n"); n != MaxNodes {
		t.Fatalf("file has %d lines, want %d", n, MaxNodes)
	}
	if _, ok := h.KnownNode("10.0.0.9:7443"); ok {
		t.Fatal("the oldest node is still remembered beyond the bound")
	}
}
