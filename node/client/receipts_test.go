package client_test

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/quicproquo/qpq/gossip"
	"github.com/quicproquo/qpq/mesh/testkit"
	"github.com/quicproquo/qpq/node/client"
	"github.com/quicproquo/qpq/node/daemon/daemontest"
	"github.com/quicproquo/qpq/node/e2e"
	"github.com/quicproquo/qpq/node/e2e/e2etest"
)

// tagSet records the tags a watcher is handed.
type tagSet struct {
	mu   sync.Mutex
	seen map[[32]byte]int
	new  chan [32]byte
}

func (s *tagSet) handle(tag [32]byte) {
	s.mu.Lock()
	s.seen[tag]++
	s.mu.Unlock()
	s.new <- tag
}

func (s *tagSet) count(tag [32]byte) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.seen[tag]
}

// waitTag waits until the watcher was handed want, the tag of a DM the
// caller sent.
func (s *tagSet) waitTag(t *testing.T, want []byte) {
	t.Helper()
	deadline := time.After(20 * time.Second)
	for {
		select {
		case tag := <-s.new:
			if string(tag[:]) == string(want) {
				return
			}
		case <-deadline:
			t.Fatalf("the watcher never saw tag %x", want[:4])
		}
	}
}

// deliver has bob, a client of n, fetch the DM e and acknowledge it, as
// `qpq recv` does.
func deliver(t *testing.T, n *daemontest.Node, bob *e2e.User, e gossip.Envelope) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, n.D.Addr(), n.ID.Fingerprint())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	signed, _ := bob.SignedBundle(1, time.Hour)
	mb, err := c.Authenticate(ctx, bob, signed)
	if err != nil {
		t.Fatal(err)
	}
	defer mb.Release()
	for {
		envs, err := mb.Fetch(ctx, 0, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		for _, x := range envs {
			if x.ID != e.ID {
				continue
			}
			m, err := e2e.OpenDM(bob, x.Payload)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := mb.Ack(ctx, [][]byte{m.ReceiptSecret[:]}); err != nil {
				t.Fatal(err)
			}
			return
		}
	}
}

// A DM goes alice -> node 1 -> node 2 -> bob, who acknowledges it. Alice
// watches the receipts node 1 streams and recognises her DM's tag
// locally, never having sent that tag to any node. The watch goes on over
// a restart of node 1 from where it was (no tag twice), and node 1 still
// serves the earlier receipt after its restart, from its store.
func TestWatchReceiptsSeesDeliveryWithoutAskingForTheTag(t *testing.T) {
	testkit.LeakCheck(t)
	dir := t.TempDir()
	ns := daemontest.Line(t, daemontest.Config(dir, "n1"), daemontest.Config(dir, "n2"))
	n1, n2 := ns[0], ns[1]
	alice, bob := e2e.NewUser(), e2e.NewUser()
	aliceSigned, _ := alice.SignedBundle(1, time.Hour)

	s, err := client.Open(t.Context(), client.SessionConfig{
		Connect: func(ctx context.Context) (*client.Client, error) {
			return client.Dial(ctx, n1.Cfg.Listen, n1.ID.Fingerprint())
		},
		Authenticate: func(ctx context.Context, c *client.Client) (*client.Mailbox, error) {
			return c.Authenticate(ctx, alice, aliceSigned)
		},
		ProbeInterval: 200 * time.Millisecond,
		ProbeTimeout:  time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	tags := &tagSet{seen: map[[32]byte]int{}, new: make(chan [32]byte, 64)}
	ctx, cancel := context.WithCancel(t.Context())
	errc := make(chan error, 1)
	go func() { errc <- client.WatchReceipts(ctx, s, tags.handle) }()
	defer func() {
		cancel()
		if err := <-errc; err != nil {
			t.Errorf("WatchReceipts: %v", err)
		}
	}()

	dm1 := e2etest.SealDM(t, alice, e2etest.BundleOf(t, bob), []byte("one"))
	enqueue(t, n1, dm1)
	deliver(t, n2, bob, dm1)
	tags.waitTag(t, dm1.ReceiptTag)

	n1.Stop()
	n1.Start()
	// Node 1 still serves the earlier receipt from its store.
	c, err := client.Dial(t.Context(), n1.Cfg.Listen, n1.ID.Fingerprint())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	secrets, _, err := c.Receipts(t.Context(), 0, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, k := range secrets {
		tag := e2e.ReceiptTagOf(k)
		found = found || string(tag[:]) == string(dm1.ReceiptTag)
	}
	if !found {
		t.Fatalf("after its restart node 1 streams %d receipts, none of them dm1's", len(secrets))
	}

	// The watch reconnects by itself and resumes from its cursor.
	dm2 := e2etest.SealDM(t, alice, e2etest.BundleOf(t, bob), []byte("two"))
	enqueue(t, n1, dm2)
	deliver(t, n2, bob, dm2)
	tags.waitTag(t, dm2.ReceiptTag)
	if n := tags.count([32]byte(dm1.ReceiptTag)); n != 1 {
		t.Errorf("dm1's tag handed over %d times, want once (the cursor survives the restart)", n)
	}
	if n := tags.count([32]byte(dm2.ReceiptTag)); n != 1 {
		t.Errorf("dm2's tag handed over %d times, want once", n)
	}
}

// When the session moves to another node (its key differs), the watch
// starts that node's stream from its oldest receipt: receipts that
// arrived while the watcher was away are not missed.
func TestWatchReceiptsOnAnotherNodeStartsFromItsOldest(t *testing.T) {
	testkit.LeakCheck(t)
	dir := t.TempDir()
	ns := daemontest.Line(t, daemontest.Config(dir, "n1"), daemontest.Config(dir, "n2"))
	n1, n2 := ns[0], ns[1]
	alice, bob := e2e.NewUser(), e2e.NewUser()
	aliceSigned, _ := alice.SignedBundle(1, time.Hour)
	var mu sync.Mutex
	target := n1
	s, err := client.Open(t.Context(), client.SessionConfig{
		Connect: func(ctx context.Context) (*client.Client, error) {
			mu.Lock()
			n := target
			mu.Unlock()
			return client.Dial(ctx, n.Cfg.Listen, n.ID.Fingerprint())
		},
		Authenticate: func(ctx context.Context, c *client.Client) (*client.Mailbox, error) {
			return c.Authenticate(ctx, alice, aliceSigned)
		},
		ProbeInterval: 200 * time.Millisecond,
		ProbeTimeout:  time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	tags := &tagSet{seen: map[[32]byte]int{}, new: make(chan [32]byte, 64)}
	ctx, cancel := context.WithCancel(t.Context())
	errc := make(chan error, 1)
	go func() { errc <- client.WatchReceipts(ctx, s, tags.handle) }()
	defer func() {
		cancel()
		if err := <-errc; err != nil {
			t.Errorf("WatchReceipts: %v", err)
		}
	}()

	dm1 := e2etest.SealDM(t, alice, e2etest.BundleOf(t, bob), []byte("one"))
	enqueue(t, n1, dm1)
	testkit.WaitFor(t, 10*time.Second, "node 2 to hold the DM", func() bool { return n2.D.Status().Store.Kinds["dm"] == 1 })
	// dm1 is delivered while the watcher's node is down; node 2 holds
	// the receipt, node 1 never hears of it.
	mu.Lock()
	target = n2
	mu.Unlock()
	n1.Stop()
	deliver(t, n2, bob, dm1)
	tags.waitTag(t, dm1.ReceiptTag)
}

// A node that refuses the watch's long poll while still answering (here:
// the connection already has as many waiting calls as a node allows) is
// asked again after a pause; the connection, which a Reader may share,
// is not dropped for it.
func TestWatchReceiptsRefusedKeepsTheConnection(t *testing.T) {
	testkit.LeakCheck(t)
	n := daemontest.Start(t, daemontest.Config(t.TempDir(), "n"))
	alice := e2e.NewUser()
	aliceSigned, _ := alice.SignedBundle(1, time.Hour)
	var mu sync.Mutex
	lost := 0
	s, err := client.Open(t.Context(), client.SessionConfig{
		Connect: func(ctx context.Context) (*client.Client, error) {
			return client.Dial(ctx, n.Cfg.Listen, n.ID.Fingerprint())
		},
		Authenticate: func(ctx context.Context, c *client.Client) (*client.Mailbox, error) {
			return c.Authenticate(ctx, alice, aliceSigned)
		},
		OnLost: func(error) { mu.Lock(); lost++; mu.Unlock() },
	})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	conn, err := s.Get(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	// Fill the connection's waits (a node allows 4) with channel polls:
	// one more than that is refused, and then the others hold them all.
	pctx, stopPolls := context.WithCancel(t.Context())
	var polls sync.WaitGroup
	defer polls.Wait()
	defer stopPolls()
	refused := make(chan struct{}, 5)
	for range 5 {
		polls.Add(1)
		go func() {
			defer polls.Done()
			_, err := conn.Client.ChannelFetch(pctx, [][32]byte{{9}}, nil, 1, time.Minute)
			if err != nil && strings.Contains(err.Error(), "too many waiting") {
				refused <- struct{}{}
			}
		}()
	}
	select {
	case <-refused:
	case <-time.After(10 * time.Second):
		t.Fatal("no channel poll was refused")
	}

	tags := &tagSet{seen: map[[32]byte]int{}, new: make(chan [32]byte, 64)}
	ctx, cancel := context.WithCancel(t.Context())
	errc := make(chan error, 1)
	go func() { errc <- client.WatchReceipts(ctx, s, tags.handle) }()
	defer func() {
		cancel()
		if err := <-errc; err != nil {
			t.Errorf("WatchReceipts: %v", err)
		}
	}()

	bob := e2e.NewUser()
	dm := e2etest.SealDM(t, alice, e2etest.BundleOf(t, bob), []byte("hi"))
	enqueue(t, n, dm)
	deliver(t, n, bob, dm)
	tags.waitTag(t, dm.ReceiptTag)
	mu.Lock()
	defer mu.Unlock()
	if lost != 0 {
		t.Errorf("the session lost its connection %d times for a refused poll", lost)
	}
	if cur, _ := s.Get(t.Context()); cur != conn {
		t.Error("the session replaced its connection for a refused poll")
	}
}
