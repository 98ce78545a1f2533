package wire

import (
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"capnproto.org/go/capnp/v3"

	"github.com/quicproquo/qpq/gossip"
	"github.com/quicproquo/qpq/gossip/relay"
	"github.com/quicproquo/qpq/gossip/store"
	"github.com/quicproquo/qpq/mesh/link"

	"github.com/quicproquo/qpq/gossip/gossiptest"
	"github.com/quicproquo/qpq/mesh/testkit"
)

// flowPair links a sender to a receiver whose engine allows the sender
// rate envelopes a second after a burst; each side says hello as the
// given protocol version (1: a node from before flow control).
func flowPair(t *testing.T, sendV, recvV uint16, rate, burst float64) (a, b *wnode, la, lb *link.Link) {
	t.Helper()
	return flowPairWith(t, sendV, recvV, rate, burst, relay.Options{})
}

// flowPairWith is flowPair with the sender's engine options (its Store is
// filled in).
func flowPairWith(t *testing.T, sendV, recvV uint16, rate, burst float64, ao relay.Options) (a, b *wnode, la, lb *link.Link) {
	t.Helper()
	sa, err := store.Open(filepath.Join(t.TempDir(), "a.db"), store.Options{MaxBytes: 8 << 20, MaxTTL: 7 * 24 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	ao.Store = sa
	a = &wnode{id: newID(t), st: sa, eng: relay.New(ao)}
	t.Cleanup(func() { a.eng.Close(); a.st.Close() })
	st, err := store.Open(filepath.Join(t.TempDir(), "b.db"), store.Options{MaxBytes: 8 << 20, MaxTTL: 7 * 24 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	b = &wnode{id: newID(t), st: st, eng: relay.New(relay.Options{Store: st, PeerRate: rate, PeerBurst: burst})}
	t.Cleanup(func() { b.eng.Close(); b.st.Close() })
	hello := func(v uint16) link.Hello {
		h := link.LocalHello("test", "qpq")
		h.Version = v
		return h
	}
	bootB := func() capnp.Client {
		return NewServer(a.id.Fingerprint(), ServerOptions{Local: hello(recvV), Handler: b.eng}).Client()
	}
	bootA := func() capnp.Client {
		return NewServer(b.id.Fingerprint(), ServerOptions{Local: hello(sendV), Handler: a.eng}).Client()
	}
	la, lb = linkPairHello(t, a.id, b.id, bootA, bootB, hello(sendV), hello(recvV))
	t.Cleanup(b.eng.AddPeer(a.id.Fingerprint(), NewPeer(lb.Remote(), lb.Version())))
	return a, b, la, lb
}

func dmBatch(n int) []gossip.Envelope {
	envs := make([]gossip.Envelope, n)
	for i := range envs {
		e := gossiptest.Hops(gossiptest.DM(nil, nil, 60, 1), 3)
		e.Destination[0], e.Destination[1] = byte(i), byte(i>>8)
		e.ID = gossip.ComputeID(e.Kind, e.Destination, e.ReceiptTag, e.Payload)
		envs[i] = e
	}
	return envs
}

func TestPushOverTheRateAnswersByVersion(t *testing.T) {
	for _, c := range []struct {
		name         string
		sendV, recvV uint16
		flow         bool
	}{
		{"both new", link.ProtocolVersion, link.ProtocolVersion, true},
		{"old sender", 1, link.ProtocolVersion, false},
		{"old receiver", link.ProtocolVersion, 1, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			testkit.LeakCheck(t)
			// Five envelopes of budget, and hardly any refill.
			_, b, la, _ := flowPair(t, c.sendV, c.recvV, 0.01, 5)
			envs := dmBatch(10)
			res, err := NewPeer(la.Remote(), la.Version()).Push(ctxT(t), envs)
			if c.flow {
				if err != nil || res.Taken != 5 || res.Accepted != 5 || res.RetryAfter <= 0 {
					t.Fatalf("push of 10 over a budget of 5: %+v, %v; want 5 taken and a time to come back", res, err)
				}
			} else if !relay.IsRateLimited(err) {
				// A version-1 node cannot read a partial answer: it must
				// get the error it knows.
				t.Fatalf("push of 10 over a budget of 5 at version 1: %+v, %v; want a rate-limit error", res, err)
			}
			stored := 0
			for _, e := range envs {
				if _, ok, _ := b.st.Get(e.ID); ok {
					stored++
				}
			}
			if stored != 5 {
				t.Errorf("the receiver stored %d envelopes, want the 5 within its budget", stored)
			}
		})
	}
}

func TestBurstOverTheRateArrivesCompleteWithoutSummaries(t *testing.T) {
	for _, c := range []struct {
		name         string
		sendV, recvV uint16
	}{
		{"both new", link.ProtocolVersion, link.ProtocolVersion},
		{"old receiver", link.ProtocolVersion, 1},
	} {
		t.Run(c.name, func(t *testing.T) {
			testkit.LeakCheck(t)
			// 300 envelopes against a burst of 40 and 50 a second (slow
			// enough that even a race-instrumented sender outruns it): the
			// engines do not Run, so no summary round ever happens; only
			// the sender keeping what was refused gets them all there.
			a, b, la, _ := flowPair(t, c.sendV, c.recvV, 50, 40)
			defer a.eng.AddPeer(b.id.Fingerprint(), NewPeer(la.Remote(), la.Version()))()
			envs := dmBatch(300)
			for _, e := range envs {
				if added, err := a.eng.Accept(e, relay.Source{Client: "c"}); err != nil || !added {
					t.Fatalf("accept: %v %v", added, err)
				}
			}
			testkit.WaitFor(t, 30*time.Second, fmt.Sprintf("all %d envelopes to reach the neighbour", len(envs)), func() bool {
				return b.st.Stats().Envelopes == int64(len(envs))
			})
			if a.eng.PushWaits() == 0 {
				t.Errorf("the sender was never held back: the test did not exceed the rate")
			}
		})
	}
}

func TestOneSummaryBringsANewNeighbourFullyUpToDate(t *testing.T) {
	testkit.LeakCheck(t)
	// a holds 300 envelopes and may queue only 50 per summary it
	// handles; b, new, sends one summary. a finishes that summary's scan
	// as its queue drains, so all 300 arrive without a second round (the
	// engines do not Run: there is none).
	a, b, la, _ := flowPairWith(t, link.ProtocolVersion, link.ProtocolVersion, 1e6, 1e6, relay.Options{MaxSummaryPush: 50})
	envs := dmBatch(300)
	for _, e := range envs {
		if added, err := a.eng.Accept(e, relay.Source{Client: "c"}); err != nil || !added {
			t.Fatalf("accept: %v %v", added, err)
		}
	}
	defer a.eng.AddPeer(b.id.Fingerprint(), NewPeer(la.Remote(), la.Version()))()
	if err := b.eng.SendSummary(ctxT(t), a.id.Fingerprint()); err != nil {
		t.Fatalf("summary: %v", err)
	}
	testkit.WaitFor(t, 30*time.Second, "all 300 envelopes to reach the new neighbour", func() bool {
		return b.st.Stats().Envelopes == int64(len(envs))
	})
}
