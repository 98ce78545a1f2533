package home

import (
	"os"
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
