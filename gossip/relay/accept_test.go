package relay

import (
	"errors"
	"math/rand/v2"
	"path/filepath"
	"testing"
	"time"

	"github.com/quicproquo/qpq/gossip"
	"github.com/quicproquo/qpq/gossip/store"
)

func TestBroadcastRefusedForQuotaIsAcceptedOnceThereIsRoom(t *testing.T) {
	// A neighbour's copy arrives while its link's share of the store is
	// full: refused. Once room is freed, a later copy must be stored, not
	// dropped as a duplicate of the one that was refused.
	clock := &fakeClock{now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
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
