package client_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/quicproquo/qpq/gossip"
	"github.com/quicproquo/qpq/node/client"
	"github.com/quicproquo/qpq/node/e2e"

	"github.com/quicproquo/qpq/mesh/testkit"

	"github.com/quicproquo/qpq/node/e2e/e2etest"

	"github.com/quicproquo/qpq/node/daemon/daemontest"
)

// recorder is a Handler that counts what it is handed.
type recorder struct {
	u       *e2e.User
	mu      sync.Mutex
	handed  map[gossip.ID]int
	got     chan gossip.ID
	holdDM1 chan struct{} // when set, the first DM waits for it before returning
}

func (r *recorder) DM(e gossip.Envelope) ([]byte, error) {
	m, err := e2e.OpenDM(r.u, e.Payload)
	if err != nil {
		return nil, nil
	}
	r.mu.Lock()
	r.handed[e.ID]++
	hold := r.holdDM1
	r.holdDM1 = nil
	r.mu.Unlock()
	r.got <- e.ID
	if hold != nil {
		<-hold
	}
	return m.ReceiptSecret[:], nil
}

func (r *recorder) Broadcast(int, gossip.Envelope) error { return nil }
func (r *recorder) Shown() error                         { return nil }

func sealDM(t *testing.T, to *e2e.User, text string) gossip.Envelope {
	t.Helper()
	return e2etest.SealDM(t, e2e.NewUser(), e2etest.BundleOf(t, to), []byte(text))
}

func enqueue(t *testing.T, n *daemontest.Node, e gossip.Envelope) {
	t.Helper()
	c, err := client.Dial(t.Context(), n.D.Addr(), n.ID.Fingerprint())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Enqueue(t.Context(), e); err != nil {
		t.Fatal(err)
	}
}

func waitGot(t *testing.T, r *recorder, want gossip.ID) {
	t.Helper()
	select {
	case id := <-r.got:
		if id != want {
			t.Fatalf("handed %x, want %x", id[:4], want[:4])
		}
	case <-time.After(20 * time.Second):
		t.Fatalf("envelope %x never handed over", want[:4])
	}
}

// A DM shown just before the node went away, and not yet acknowledged, is
// acknowledged on the new connection without being handed over again; a
// DM sent after the restart arrives once; the loss and the return are
// announced once each.
func TestSessionReconnectsAndResumesWithoutRepeats(t *testing.T) {
	testkit.LeakCheck(t)
	n := daemontest.Start(t, daemontest.Config(t.TempDir(), "store"))
	bob := e2e.NewUser()
	signed, _ := bob.SignedBundle(1, time.Hour)
	var lost, back int
	var mu sync.Mutex
	backed := make(chan struct{}, 1)
	s, err := client.Open(t.Context(), client.SessionConfig{
		Connect: func(ctx context.Context) (*client.Client, error) {
			return client.Dial(ctx, n.Cfg.Listen, n.ID.Fingerprint())
		},
		Authenticate: func(ctx context.Context, c *client.Client) (*client.Mailbox, error) {
			return c.Authenticate(ctx, bob, signed)
		},
		ProbeInterval: 200 * time.Millisecond,
		ProbeTimeout:  time.Second,
		OnLost:        func(error) { mu.Lock(); lost++; mu.Unlock() },
		OnBack: func() {
			mu.Lock()
			back++
			mu.Unlock()
			backed <- struct{}{}
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	hold := make(chan struct{})
	rec := &recorder{u: bob, handed: map[gossip.ID]int{}, got: make(chan gossip.ID, 8), holdDM1: hold}
	r := client.NewReader(s, client.ReaderConfig{Wait: 5 * time.Second, CallTimeout: 3 * time.Second}, rec)
	ctx, cancel := context.WithCancel(t.Context())
	errc := make(chan error, 1)
	go func() { errc <- r.Follow(ctx) }()

	dm1 := sealDM(t, bob, "before")
	enqueue(t, n, dm1)
	waitGot(t, rec, dm1.ID)
	n.Stop() // while dm1 is shown but not acknowledged
	close(hold)
	n.Start()
	select {
	case <-backed:
	case <-time.After(20 * time.Second):
		t.Fatal("never reconnected")
	}
	dm2 := sealDM(t, bob, "after")
	enqueue(t, n, dm2)
	waitGot(t, rec, dm2.ID)
	// dm1 was acknowledged on the new connection: the node deletes it.
	testkit.WaitFor(t, 10*time.Second, "the node to delete the acknowledged DMs", func() bool { return n.D.Status().Store.Kinds["dm"] == 0 })
	cancel()
	if err := <-errc; err != nil {
		t.Fatalf("Follow: %v", err)
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if rec.handed[dm1.ID] != 1 || rec.handed[dm2.ID] != 1 || len(rec.handed) != 2 {
		t.Fatalf("handed %v, want each DM once", rec.handed)
	}
	mu.Lock()
	defer mu.Unlock()
	if lost != 1 || back != 1 {
		t.Fatalf("announced lost %d and back %d times, want once each", lost, back)
	}
}
