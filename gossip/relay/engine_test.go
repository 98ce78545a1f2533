package relay

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/quicproquo/qpq/gossip"
	"github.com/quicproquo/qpq/gossip/store"
	"github.com/quicproquo/qpq/mesh/identity"

	"github.com/quicproquo/qpq/gossip/gossiptest"
)

// purgeSignal is a store that reports each Purge.
type purgeSignal struct {
	*store.Store
	purged chan struct{}
}

func (s purgeSignal) Purge() (int, int, error) {
	exp, tomb, err := s.Store.Purge()
	select {
	case s.purged <- struct{}{}:
	default:
	}
	return exp, tomb, err
}

// summaryPeer records the summaries an engine sends it; the first fail
// ones fail.
type summaryPeer struct {
	recPeer
	fail int
	got  chan time.Time
}

func (p *summaryPeer) Summary(ctx context.Context, s Summary) error {
	p.mu.Lock()
	failing := p.fail > 0
	p.fail--
	p.mu.Unlock()
	p.got <- time.Now()
	if failing {
		return errors.New("neighbour not ready")
	}
	return nil
}

func TestRunPurgesTheStore(t *testing.T) {
	clock := newClock()
	st, err := store.Open(filepath.Join(t.TempDir(), "store.db"), store.Options{MaxBytes: 8 << 20, MaxTTL: 7 * 24 * time.Hour, Clock: clock})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ps := purgeSignal{Store: st, purged: make(chan struct{}, 1)}
	eng := New(Options{Store: ps, Now: clock.Now, PurgeInterval: time.Millisecond})
	defer eng.Close()
	e := gossiptest.Hops(gossiptest.DM(nil, nil, 60, 2), 4)
	if added, err := eng.Accept(e, Source{Client: "c"}); err != nil || !added {
		t.Fatalf("accept: %v %v", added, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		eng.Run(ctx)
	}()
	clock.Advance(2 * time.Minute)
	<-ps.purged // may have run before the advance
	<-ps.purged
	if n := st.Stats().Envelopes; n != 0 {
		t.Errorf("after Run's purge the store holds %d envelopes, want 0 (the dm expired)", n)
	}
	cancel()
	<-done
}

func TestRunSendsSummariesAtLinkUpAndRetries(t *testing.T) {
	clock := newClock()
	n := newTNode(t, clock)
	done := make(chan struct{})
	go func() {
		defer close(done)
		n.eng.Run(context.Background())
	}()
	p := &summaryPeer{recPeer: recPeer{wake: make(chan struct{}, 1)}, fail: 1, got: make(chan time.Time, 4)}
	defer n.eng.AddPeer(identity.Fingerprint{1}, p)()
	first := <-p.got // at link-up; it fails
	select {
	case second := <-p.got:
		if d := second.Sub(first); d < 500*time.Millisecond {
			t.Errorf("a failed summary was retried after %v, want about 1 s", d)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a failed summary was not retried")
	}
	// Close ends Run and every summary loop.
	n.eng.Close()
	<-done
	n.eng.Run(context.Background()) // after Close: returns at once
}

func TestRunCatchesUpANeighbourWithoutAnyCall(t *testing.T) {
	clock := newClock()
	a, b := newTNode(t, clock), newTNode(t, clock)
	var ids []gossip.ID
	for range 50 {
		e := gossiptest.Hops(gossiptest.DM(nil, nil, 3600, 2), 8)
		a.eng.Accept(e, Source{Client: "c"})
		ids = append(ids, e.ID)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go b.eng.Run(ctx)
	defer connect(a, b)()
	for _, id := range ids {
		waitHas(t, b, id, true)
	}
}
