package e2e_test

import (
	"testing"

	"github.com/quicproquo/qpq/gossip"
	"github.com/quicproquo/qpq/node/e2e"
)

// TestLimitsMatchGossip: e2e repeats gossip's wire limits (so gossip may
// import e2e without a cycle); they must agree, and the largest sealed
// message must fit what relays accept.
func TestLimitsMatchGossip(t *testing.T) {
	if e2e.PadBlockForTest != gossip.PadBlock || e2e.MaxBodyForTest != gossip.MaxBody || e2e.MaxPayloadForTest != gossip.MaxPayload {
		t.Fatalf("e2e limits %d/%d/%d differ from gossip's %d/%d/%d",
			e2e.PadBlockForTest, e2e.MaxBodyForTest, e2e.MaxPayloadForTest, gossip.PadBlock, gossip.MaxBody, gossip.MaxPayload)
	}
	for _, n := range []int{0, 1, 256, gossip.MaxBody} {
		for name, size := range map[string]int{"dm": e2e.DMPayloadSize(n), "channel": e2e.ChannelPayloadSize(n)} {
			if size%gossip.PadBlock != 0 || size > gossip.MaxPayload {
				t.Errorf("%s with a %d-byte body: payload %d bytes", name, n, size)
			}
		}
	}
}
