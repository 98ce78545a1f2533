package relay

import (
	"errors"
	"math/rand/v2"
	"path/filepath"
	"testing"
	"time"

	"github.com/quicproquo/qpq/gossip"
	"github.com/quicproquo/qpq/gossip/store"
	"github.com/quicproquo/qpq/mesh/identity"
)

func TestBroadcastRefusedForQuotaIsAcceptedOnceThereIsRoom(t *testing.T) {
	// A neighbour's copy arrives while its link's share of the store is
	// full: refused. Once room is freed, a later copy must be stored, not
	// dropped as a duplicate of the one that was refused.
	clock := newClock()
	st, err := store.Open(filepath.Join(t.TempDir(), "store.db"), store.Options{MaxBytes: 1 << 20, MaxPerSource: 8 << 10, MaxTTL: 7 * 24 * time.Hour, Clock: clock})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	eng := New(Options{Store: st, Now: clock.Now})
	defer eng.Close()
	src := Source{Client: "greedy"}
	r := rand.New(rand.NewPCG(3, 3))
	var filler []gossip.Envelope
	var b gossip.Envelope // the first copy refused for the quota
	for {
		e := broadcast(r, 3)
		added, err := eng.Accept(e, src)
		if err != nil {
			if !errors.Is(err, store.ErrSourceQuota) || added {
				t.Fatalf("filling the quota: added %v, err %v; want refused for the quota", added, err)
			}
			b = e
			break
		}
		filler = append(filler, e)
	}
	if _, err := st.Delete(filler[0].ID); err != nil {
		t.Fatal(err)
	}
	added, err := eng.Accept(b, src)
	if err != nil || !added {
		t.Fatalf("the broadcast again once there is room: added %v, err %v; want stored", added, err)
	}
	if _, ok, _ := st.Get(b.ID); !ok {
		t.Fatal("the broadcast is not in the store")
	}
	// And a third copy is the duplicate.
	if added, err := eng.Accept(b, src); err != nil || added {
		t.Fatalf("third copy: added %v, err %v; want a duplicate", added, err)
	}
}

// failingDelete is a store whose Delete fails.
type failingDelete struct{ *store.Store }

var errDiskGone = errors.New("disk gone")

func (failingDelete) Delete(gossip.ID) (bool, error) { return false, errDiskGone }

func TestNewerBundleRefusedWhenTheOlderCannotBeDropped(t *testing.T) {
	// Replacing a bundle deletes the older one; when that fails the
	// newer one is refused with the store's error, not stored beside it
	// as if all were well.
	clock := newClock()
	st, err := store.Open(filepath.Join(t.TempDir(), "store.db"), store.Options{MaxBytes: 1 << 20, MaxTTL: 7 * 24 * time.Hour, Clock: clock})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	var owner [32]byte
	owner[0] = 5
	// The fake signed record is the owner's fingerprint then a sequence
	// byte.
	verify := func(signed []byte) (identity.Fingerprint, uint64, error) {
		return identity.Fingerprint(signed[:32]), uint64(signed[32]), nil
	}
	eng := New(Options{Store: failingDelete{st}, Now: clock.Now, VerifyBundle: verify})
	defer eng.Close()
	bundle := func(seq byte) gossip.Envelope {
		e, err := gossip.NewBundleEnvelope(owner, append(owner[:], seq), 3600, 4)
		if err != nil {
			t.Fatal(err)
		}
		return e
	}
	if added, err := eng.Accept(bundle(1), Source{Client: "c"}); err != nil || !added {
		t.Fatalf("first bundle: %v %v", added, err)
	}
	added, err := eng.Accept(bundle(2), Source{Client: "c"})
	if !errors.Is(err, errDiskGone) || added {
		t.Fatalf("newer bundle when the older cannot be deleted: added %v, err %v; want the store's error", added, err)
	}
}
