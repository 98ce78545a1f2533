package client_test

import (
	"context"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/quicproquo/qpq/gossip"
	"github.com/quicproquo/qpq/mesh/identity"
	"github.com/quicproquo/qpq/node/client"
	"github.com/quicproquo/qpq/node/config"
	"github.com/quicproquo/qpq/node/daemon"
	"github.com/quicproquo/qpq/node/e2e"
	"github.com/quicproquo/qpq/schemas"
)

// node is an in-process node on loopback that can be stopped and started
// again on the same address with the same key and store.
type node struct {
	t      *testing.T
	id     *identity.Node
	cfg    config.Config
	d      *daemon.Daemon
	cancel context.CancelFunc
	done   chan struct{}
}

func startNode(t *testing.T) *node {
	id, err := identity.NewNode()
	if err != nil {
		t.Fatal(err)
	}
	cfg := config.Default()
	cfg.Listen = "127.0.0.1:0"
	cfg.MDNS = false
	cfg.Store = filepath.Join(t.TempDir(), "store.db")
	n := &node{t: t, id: id, cfg: cfg}
	n.start()
	n.cfg.Listen = n.d.Addr() // a restart comes back on the same port
	t.Cleanup(n.stop)
	return n
}

func (n *node) start() {
	d, err := daemon.NewWithIdentity(n.cfg, n.id, nil)
	if err != nil {
		n.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	n.d, n.cancel, n.done = d, cancel, make(chan struct{})
	go func() {
		defer close(n.done)
		d.Run(ctx)
	}()
}

func (n *node) stop() {
	if n.d == nil {
		return
	}
	n.cancel()
	n.d.Close()
	<-n.done
	n.d = nil
}

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
	signed, _ := to.SignedBundle(1, time.Hour)
	b, err := e2e.VerifyBundle(signed)
	if err != nil {
		t.Fatal(err)
	}
	s, err := e2e.SealDM(e2e.NewUser(), b, []byte(text), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	env := gossip.Envelope{Kind: schemas.Envelope_Kind_dm, Destination: append([]byte(nil), b.Fingerprint[:]...),
		TTLSeconds: 3600, HopLimit: 8, ReceiptTag: append([]byte(nil), s.ReceiptTag[:]...), Payload: s.Payload}
	env.ID = gossip.ComputeID(env.Kind, env.Destination, env.ReceiptTag, env.Payload)
	return env
}

func enqueue(t *testing.T, n *node, e gossip.Envelope) {
	t.Helper()
	c, err := client.Dial(t.Context(), n.d.Addr(), n.id.Fingerprint())
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
	n := startNode(t)
	bob := e2e.NewUser()
	signed, _ := bob.SignedBundle(1, time.Hour)
	var lost, back int
	var mu sync.Mutex
	backed := make(chan struct{}, 1)
	s, err := client.Open(t.Context(), client.SessionConfig{
		Connect: func(ctx context.Context) (*client.Client, error) {
			return client.Dial(ctx, n.cfg.Listen, n.id.Fingerprint())
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
	n.stop() // while dm1 is shown but not acknowledged
	close(hold)
	n.start()
	select {
	case <-backed:
	case <-time.After(20 * time.Second):
		t.Fatal("never reconnected")
	}
	dm2 := sealDM(t, bob, "after")
	enqueue(t, n, dm2)
	waitGot(t, rec, dm2.ID)
	// dm1 was acknowledged on the new connection: the node deletes it.
	deadline := time.Now().Add(10 * time.Second)
	for n.d.Status().Store.Kinds["dm"] != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("node still holds %d DMs", n.d.Status().Store.Kinds["dm"])
		}
		time.Sleep(20 * time.Millisecond)
	}
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
