package wire

import (
	"encoding/binary"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/quicproquo/qpq/gossip"
	"github.com/quicproquo/qpq/gossip/relay"
	"github.com/quicproquo/qpq/gossip/store"
	"github.com/quicproquo/qpq/mesh/link"
	"github.com/quicproquo/qpq/schemas"

	"github.com/quicproquo/qpq/gossip/gossiptest"

	"github.com/quicproquo/qpq/mesh/testkit"
)

// health calls health on peer.
func health(t *testing.T, peer schemas.MeshPeer) error {
	fut, release := peer.Health(ctxT(t), nil)
	defer release()
	_, err := fut.Struct()
	return err
}

func TestHandlerPanicIsRecoveredAndDropsTheLink(t *testing.T) {
	testkit.LeakCheck(t)
	for _, method := range []string{"push", "summary", "raise"} {
		h := &recHandler{panicOn: method}
		var dropped []string
		remote := serve(t, h, ServerOptions{Drop: func(reason string) { dropped = append(dropped, reason) }})
		peer := NewPeer(remote, link.ProtocolVersion)
		var err error
		switch method {
		case "push":
			_, err = peer.Push(ctxT(t), []gossip.Envelope{gossiptest.Hops(gossiptest.DM(nil, nil, 60, 1), 3)})
		case "summary":
			err = peer.Summary(ctxT(t), relay.Summary{Filter: []byte{1}, Key: []byte{2}})
		case "raise":
			err = peer.Raise(ctxT(t), []relay.HopRaise{{ID: gossip.ID{1}, HopLimit: 2}})
		}
		if err == nil || !strings.Contains(err.Error(), ErrInternal.Error()) {
			t.Errorf("%s that panicked: got %v, want an error saying %q", method, err, ErrInternal)
		}
		if len(dropped) != 1 {
			t.Errorf("%s that panicked: Drop called %d times, want once", method, len(dropped))
		}
		// The process is alive and the server still answers.
		if err := health(t, remote); err != nil {
			t.Errorf("health after a %s that panicked: %v", method, err)
		}
	}
}

func TestHostileSummaryRefusedAndTheNodeStillAnswers(t *testing.T) {
	testkit.LeakCheck(t)
	// The attack, over the wire: a 32-byte filter whose header
	// claims 2^40 bits. The node refuses it with a clear error, allocates
	// nothing of the sort, and goes on answering.
	st, err := store.Open(filepath.Join(t.TempDir(), "store.db"), store.Options{MaxBytes: 1 << 20, MaxTTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	eng := relay.New(relay.Options{Store: st})
	defer eng.Close()
	defer eng.AddPeer(identity0, NewPeer(schemas.MeshPeer{}, link.ProtocolVersion))()
	remote := schemas.MeshPeer(NewServer(identity0, ServerOptions{Handler: eng}).Client())
	defer remote.Release()
	filter := make([]byte, 32)
	binary.BigEndian.PutUint64(filter[0:], 1<<40)
	binary.BigEndian.PutUint64(filter[8:], 7)
	binary.BigEndian.PutUint64(filter[16:], 1<<40)
	err = NewPeer(remote, link.ProtocolVersion).Summary(ctxT(t), relay.Summary{Filter: filter, Key: make([]byte, 16), Count: 1})
	if err == nil || !strings.Contains(err.Error(), "malformed summary") || !strings.Contains(err.Error(), "1099511627776 bits") {
		t.Fatalf("summary claiming 2^40 bits: got %v, want a malformed-summary error naming the claim", err)
	}
	if err := health(t, remote); err != nil {
		t.Fatalf("health after the hostile summary: %v", err)
	}
	if r, err := NewPeer(remote, link.ProtocolVersion).Push(ctxT(t), []gossip.Envelope{gossiptest.Hops(gossiptest.DM(nil, nil, 60, 1), 3)}); err != nil || r.Accepted != 1 {
		t.Fatalf("push after the hostile summary: %d %v", r.Accepted, err)
	}
}
