package wire

import (
	"bytes"
	"errors"
	"sync"
	"testing"

	"github.com/quicproquo/qpq/mesh/identity"
	"github.com/quicproquo/qpq/mesh/onion"
	"github.com/quicproquo/qpq/schemas"
)

// recOnions records the packets a server hands on.
type recOnions struct {
	mu   sync.Mutex
	pkts [][]byte
}

func (o *recOnions) Onion(_ identity.Fingerprint, pkt []byte) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.pkts = append(o.pkts, pkt)
	return nil
}

// Every onion packet handed to a link has the one size: the caller
// refuses to send another, the callee to take one, and a packet of the
// size arrives byte for byte; over a link that agreed on less than
// version 4 none is sent.
func TestOnionPacketsHaveOneSize(t *testing.T) {
	rec := &recOnions{}
	remote := serve(t, &recHandler{}, ServerOptions{Onions: rec})
	p := NewPeer(remote, OnionVersion)
	for _, n := range []int{0, onion.Size - 1, onion.Size + 1} {
		if err := p.Onion(ctxT(t), make([]byte, n)); err == nil {
			t.Errorf("a packet of %d bytes was sent", n)
		}
	}
	fut, release := remote.Onion(ctxT(t), func(ps schemas.MeshPeer_onion_Params) error { return ps.SetPacket(make([]byte, 100)) })
	_, err := fut.Struct()
	release()
	if err == nil {
		t.Error("the callee took a packet of 100 bytes")
	}
	pkt := make([]byte, onion.Size)
	pkt[0], pkt[onion.Size-1] = 1, 2
	if err := p.Onion(ctxT(t), pkt); err != nil {
		t.Fatal(err)
	}
	if err := NewPeer(remote, OnionVersion-1).Onion(ctxT(t), pkt); !errors.Is(err, ErrOnionUnsupported) {
		t.Errorf("over a version %d link: %v", OnionVersion-1, err)
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if len(rec.pkts) != 1 || !bytes.Equal(rec.pkts[0], pkt) {
		t.Fatalf("the callee got %d packets", len(rec.pkts))
	}
}
