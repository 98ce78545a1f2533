package relay

import (
	"testing"
	"time"

	"github.com/quicproquo/qpq/gossip"
	"github.com/quicproquo/qpq/mesh/descriptor"
	"github.com/quicproquo/qpq/mesh/identity"
	"github.com/quicproquo/qpq/schemas"
)

// A stored descriptor is reported with the neighbour it came from, so the
// node can budget the dials it causes per neighbour (issue 9, defect 19);
// one a client handed over is reported with no neighbour.
func TestOnDescriptorNamesTheNeighbour(t *testing.T) {
	n := newTNode(t, newClock())
	n.eng.o.VerifyDescriptor = func(signed []byte) (identity.Fingerprint, uint64, error) {
		d, err := descriptor.Verify(signed)
		return d.FP, d.Seq, err
	}
	type report struct{ from identity.Fingerprint }
	var got []report
	n.eng.o.OnDescriptor = func(_ []byte, from identity.Fingerprint) { got = append(got, report{from}) }
	mk := func() gossip.Envelope {
		id, _ := identity.NewNode()
		b, err := descriptor.Sign(id, []string{"10.0.0.1:7443"}, "qpq", 1, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		e, err := gossip.NewSignedEnvelope(schemas.Envelope_Kind_descriptor, id.Fingerprint(), b, 3600, 4)
		if err != nil {
			t.Fatal(err)
		}
		return e
	}
	nb, _ := identity.NewNode()
	if added, err := n.eng.Accept(mk(), Source{Peer: nb.Fingerprint()}); err != nil || !added {
		t.Fatalf("descriptor from a neighbour: %v %v", added, err)
	}
	if added, err := n.eng.Accept(mk(), Source{Client: "c"}); err != nil || !added {
		t.Fatalf("descriptor from a client: %v %v", added, err)
	}
	if len(got) != 2 || got[0].from != nb.Fingerprint() || !got[1].from.IsZero() {
		t.Fatalf("reports %+v, want the neighbour %s then none", got, nb.Fingerprint())
	}
}
