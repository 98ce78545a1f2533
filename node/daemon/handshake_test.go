package daemon

import (
	"context"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/quicproquo/qpq/mesh/identity"
	"github.com/quicproquo/qpq/mesh/link"

	"github.com/quicproquo/qpq/mesh/testkit"
)

// Peer handshakes that stall after TLS (never opening the RPC stream)
// from one address cannot hold every handshake slot: a neighbour at
// another address links at once.
func TestStalledHandshakesFromOneAddressDoNotBlockOthers(t *testing.T) {
	testkit.LeakCheck(t)
	d := newDaemon(t, nil)
	id, err := identity.NewNode()
	if err != nil {
		t.Fatal(err)
	}
	tr, err := link.NewDialer("127.0.0.1:0", id)
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var stalled []*quic.Conn
	for range maxPendingHandshakes {
		conn, err := tr.Dial(ctx, d.Addr(), d.Fingerprint(), link.ALPNPeer)
		if err != nil {
			// Refused already (the transport's or the node's per-address
			// bound): it holds no slot.
			continue
		}
		stalled = append(stalled, conn)
	}
	// Each stalled connection is either in hello at the node or refused.
	testkit.WaitFor(t, 5*time.Second, "the node to take in every stalled handshake", func() bool {
		refused := 0
		for _, c := range stalled {
			if c.Context().Err() != nil {
				refused++
			}
		}
		return len(d.pending)+refused == len(stalled)
	})
	start := time.Now()
	p := dialPeerFrom(t, d, "127.0.0.2:0")
	if p.l == nil {
		t.Fatal("no link")
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("linking took %v behind stalled handshakes", took)
	}
}
