package p2p

import (
	"strings"
	"testing"

	"github.com/quicproquo/qpq/mesh/identity"
)

// An exchange answer is bounded and checked: too many lines, a line too
// long or not a bridge address is an error naming it, never a panic.
func TestReadPeersBoundsItsInput(t *testing.T) {
	id, _ := identity.NewNode()
	pid, _ := PeerID(id)
	line := "/ip4/127.0.0.1/udp/7444/quic-v1/p2p/" + pid.String() + "\n"
	got, err := readPeers(strings.NewReader(line + strings.Replace(line, "7444", "7445", 1)))
	if err != nil || len(got) != 1 || got[0].ID != pid || len(got[0].Addrs) != 2 {
		t.Fatalf("two addresses of one bridge: %v %v", got, err)
	}
	for name, in := range map[string]string{
		"too many lines":  strings.Repeat(line, maxExchangeLines+1),
		"a line too long": "/ip4/127.0.0.1/udp/7444/quic-v1/p2p/" + strings.Repeat("x", maxExchangeLine) + "\n",
		"not a multiaddr": "hello\n",
		"no peer id":      "/ip4/127.0.0.1/udp/7444/quic-v1\n",
	} {
		if _, err := readPeers(strings.NewReader(in)); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}
