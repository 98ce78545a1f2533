package gossiptest

import (
	"testing"

	"github.com/quicproquo/qpq/gossip"
	"github.com/quicproquo/qpq/schemas"
)

// Every builder makes an envelope that survives the wire format with its
// id intact.
func TestBuiltEnvelopesAreValid(t *testing.T) {
	for name, e := range map[string]gossip.Envelope{
		"dm":         DM(nil, nil, 60, 2),
		"broadcast":  Broadcast(nil, 60),
		"receipt":    Receipt(t),
		"bundle":     Signed(schemas.Envelope_Kind_bundle, 1),
		"dm, 2 hops": Hops(DM(nil, nil, 60, 1), 2),
	} {
		b, err := e.Marshal()
		if err != nil {
			t.Fatalf("%s: marshal: %v", name, err)
		}
		got, err := gossip.Unmarshal(b)
		if err != nil {
			t.Fatalf("%s: unmarshal: %v", name, err)
		}
		if got.ID != e.ID || got.HopLimit != e.HopLimit {
			t.Errorf("%s: round trip changed id or hop limit", name)
		}
	}
}
