package outbox

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/quicproquo/qpq/gossip"
	"github.com/quicproquo/qpq/mesh/testkit"
	"github.com/quicproquo/qpq/node/client"
	"github.com/quicproquo/qpq/node/daemon/daemontest"
	"github.com/quicproquo/qpq/node/e2e"
)

// session opens u's authenticated session to node n (publishing u's
// bundle there).
func session(t *testing.T, n *daemontest.Node, u *e2e.User) *client.Session {
	t.Helper()
	signed, err := u.SignedBundle(1, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	addr, fp := n.D.Addr(), n.ID.Fingerprint()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := client.Open(ctx, client.SessionConfig{
		Connect: func(ctx context.Context) (*client.Client, error) { return client.Dial(ctx, addr, fp) },
		Authenticate: func(ctx context.Context, c *client.Client) (*client.Mailbox, error) {
			return c.Authenticate(ctx, u, signed)
		},
		Backoff: client.Backoff{},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

// counter is a Reader handler that opens and counts DMs by body.
type counter struct {
	u    *e2e.User
	seen map[string]int
}

func (c *counter) DM(e gossip.Envelope) ([]byte, error) {
	m, err := e2e.OpenDM(c.u, e.Payload)
	if err != nil {
		return nil, nil
	}
	c.seen[string(m.Body)]++
	return append([]byte(nil), m.ReceiptSecret[:]...), nil
}
func (c *counter) Broadcast(int, gossip.Envelope) error { return nil }
func (c *counter) Shown() error                         { return nil }

// Over a real node: the Sender finds the recipient's bundle, seals, and
// the node stores it. Sending the same entry's envelope again (a crash
// after the enqueue and before "stored" was written, or a reconnection)
// shows it to the reader once; sent again after the reader acknowledged
// it, it is not shown again either (the node remembers the id).
func TestResendSameEnvelopeOverRealNodeShownOnce(t *testing.T) {
	testkit.LeakCheck(t)
	dir := t.TempDir()
	n := daemontest.Start(t, daemontest.Config(dir, "n"))
	alice, bob := e2e.NewUser(), e2e.NewUser()
	bobS := session(t, n, bob) // publishes bob's bundle
	aliceS := session(t, n, alice)
	o, err := Open(filepath.Join(dir, FileName), alice, Config{})
	if err != nil {
		t.Fatal(err)
	}
	e, err := o.Add(Message{To: bob.Fingerprint(), Body: []byte("once"), TTL: time.Hour, Hops: 16})
	if err != nil {
		t.Fatal(err)
	}
	tr := SessionTransport(aliceS)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if left, err := NewSender(o, tr, SenderConfig{FailUnknown: func(Entry) bool { return true }}).Pass(ctx); err != nil || left != 0 {
		t.Fatalf("pass: left %d, %v", left, err)
	}
	e, _ = o.Get(e.Ref)
	if e.State != Stored {
		t.Fatalf("state %s (%s), want stored", e.State, e.Reason)
	}
	// The crash case: the same envelope again.
	for range 2 {
		if err := tr.Enqueue(ctx, e.Envelope); err != nil {
			t.Fatal(err)
		}
	}
	c := &counter{u: bob, seen: map[string]int{}}
	if err := client.NewReader(bobS, client.ReaderConfig{}, c).Drain(ctx); err != nil {
		t.Fatal(err)
	}
	if c.seen["once"] != 1 {
		t.Fatalf("bob saw it %d times, want once", c.seen["once"])
	}
	if err := tr.Enqueue(ctx, e.Envelope); err != nil {
		t.Fatal(err)
	}
	c2 := &counter{u: bob, seen: map[string]int{}}
	if err := client.NewReader(bobS, client.ReaderConfig{}, c2).Drain(ctx); err != nil {
		t.Fatal(err)
	}
	if c2.seen["once"] != 0 {
		t.Fatalf("resent after the acknowledgement, bob saw it again (%d)", c2.seen["once"])
	}
}
