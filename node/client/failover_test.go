package client_test

import (
	"context"
	"errors"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/quicproquo/qpq/gossip"
	"github.com/quicproquo/qpq/mesh/identity"
	"github.com/quicproquo/qpq/mesh/testkit"
	"github.com/quicproquo/qpq/node/client"
	"github.com/quicproquo/qpq/node/daemon/daemontest"
	"github.com/quicproquo/qpq/node/e2e"
)

// events counts a session's callbacks.
type events struct {
	mu                  sync.Mutex
	lost, back, refused int
	switches            []string // from->to addresses
	switched            chan struct{}
}

func (ev *events) config(cfg client.SessionConfig) client.SessionConfig {
	ev.switched = make(chan struct{}, 4)
	cfg.OnLost = func(error) { ev.mu.Lock(); ev.lost++; ev.mu.Unlock() }
	cfg.OnBack = func() { ev.mu.Lock(); ev.back++; ev.mu.Unlock() }
	cfg.OnSwitch = func(from, to client.Candidate) {
		ev.mu.Lock()
		ev.switches = append(ev.switches, from.Addr+"->"+to.Addr)
		ev.mu.Unlock()
		ev.switched <- struct{}{}
	}
	cfg.OnRefused = func(client.Candidate, error) { ev.mu.Lock(); ev.refused++; ev.mu.Unlock() }
	return cfg
}

func authAs(u *e2e.User, signed []byte) func(context.Context, *client.Client) (*client.Mailbox, error) {
	return func(ctx context.Context, c *client.Client) (*client.Mailbox, error) {
		return c.Authenticate(ctx, u, signed)
	}
}

// Two linked nodes; a follower reads at node 1, which dies for good while
// a DM is shown but not yet acknowledged. The session moves to node 2
// after SwitchAfter failed attempts, authenticates there, and the reader
// shows the DM sent during the outage once and the unacknowledged one not
// again (node 2 holds both: DMs travel to every node).
func TestFailoverToTheNextNodeShowsEachDMOnce(t *testing.T) {
	testkit.LeakCheck(t)
	dir := t.TempDir()
	ns := daemontest.Line(t, daemontest.Config(dir, "n1"), daemontest.Config(dir, "n2"))
	n1, n2 := ns[0], ns[1]
	bob := e2e.NewUser()
	signed, _ := bob.SignedBundle(1, time.Hour)
	ev := &events{}
	s, err := client.Open(t.Context(), ev.config(client.SessionConfig{
		// Node 2 is known by address only: its key is learnt on first use.
		Nodes:          []client.Candidate{{Addr: n1.Cfg.Listen, Pin: n1.ID.Fingerprint(), Trusted: true}, {Addr: n2.Cfg.Listen, Trusted: true}},
		Authenticate:   authAs(bob, signed),
		AttemptTimeout: 500 * time.Millisecond,
		Backoff:        client.Backoff{Min: 50 * time.Millisecond, Max: 200 * time.Millisecond},
		ProbeInterval:  200 * time.Millisecond,
		ProbeTimeout:   300 * time.Millisecond,
	}))
	if err != nil {
		t.Fatal(err)
	}
	if st := s.State(); !st.Up || st.Node.Addr != n1.Cfg.Listen {
		t.Fatalf("state after Open %+v, want up at node 1", st)
	}
	hold := make(chan struct{})
	rec := &recorder{u: bob, handed: map[gossip.ID]int{}, got: make(chan gossip.ID, 8), holdDM1: hold}
	r := client.NewReader(s, client.ReaderConfig{Wait: 5 * time.Second, CallTimeout: 2 * time.Second}, rec)
	ctx, cancel := context.WithCancel(t.Context())
	errc := make(chan error, 1)
	go func() { errc <- r.Follow(ctx) }()

	dm1 := sealDM(t, bob, "before")
	enqueue(t, n1, dm1)
	waitGot(t, rec, dm1.ID)
	testkit.WaitFor(t, 10*time.Second, "dm1 to reach node 2", func() bool { return n2.D.Status().Store.Kinds["dm"] == 1 })
	n1.Stop() // for good, while dm1 is shown but not acknowledged
	close(hold)
	dm2 := sealDM(t, bob, "during the outage")
	enqueue(t, n2, dm2)
	select {
	case <-ev.switched:
	case <-time.After(15 * time.Second):
		t.Fatal("never moved to node 2")
	}
	waitGot(t, rec, dm2.ID)
	// Both were acknowledged at node 2: it deletes them.
	testkit.WaitFor(t, 10*time.Second, "node 2 to delete the acknowledged DMs", func() bool { return n2.D.Status().Store.Kinds["dm"] == 0 })
	if st := s.State(); !st.Up || st.Node.Addr != n2.Cfg.Listen || st.Node.Pin != n2.ID.Fingerprint() {
		t.Fatalf("state after failover %+v, want up at node 2 pinned to its key", st)
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
	ev.mu.Lock()
	defer ev.mu.Unlock()
	want := n1.Cfg.Listen + "->" + n2.Cfg.Listen
	if ev.lost != 1 || ev.back != 1 || len(ev.switches) != 1 || ev.switches[0] != want {
		t.Fatalf("lost %d, back %d, switches %v; want once each, %s", ev.lost, ev.back, ev.switches, want)
	}
}

// silentAddr is a loopback UDP address nothing answers on.
func silentAddr(t *testing.T) string {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	return pc.LocalAddr().String()
}

// A candidate that proves another key than its pin is given up (never
// authenticated to, reported once); an untrusted one is put to Trust
// before the mailbox authenticates, and refused when Trust says no; a
// trusted one is used.
func TestCandidatesWithAChangedKeyOrRefusedTrustAreSkipped(t *testing.T) {
	testkit.LeakCheck(t)
	dir := t.TempDir()
	a := daemontest.Start(t, daemontest.Config(dir, "a"))
	b := daemontest.Start(t, daemontest.Config(dir, "b"))
	c := daemontest.Start(t, daemontest.Config(dir, "c"))
	bob := e2e.NewUser()
	signed, _ := bob.SignedBundle(1, time.Hour)
	var asked []identity.Fingerprint
	authed := 0
	ev := &events{}
	s, err := client.Open(t.Context(), ev.config(client.SessionConfig{
		Nodes: []client.Candidate{
			{Addr: a.Cfg.Listen, Pin: c.ID.Fingerprint(), Trusted: true}, // a's key changed
			{Addr: b.Cfg.Listen}, // seen by mDNS only
			{Addr: c.Cfg.Listen, Pin: c.ID.Fingerprint(), Trusted: true},
		},
		Trust: func(_ context.Context, cand client.Candidate, fp identity.Fingerprint) error {
			asked = append(asked, fp)
			return errors.New("the user said no")
		},
		Authenticate: func(ctx context.Context, cl *client.Client) (*client.Mailbox, error) {
			authed++
			if cl.NodeFingerprint() != c.ID.Fingerprint() {
				t.Errorf("authenticated to %s", cl.NodeFingerprint().Short())
			}
			return cl.Authenticate(ctx, bob, signed)
		},
		AttemptTimeout: 2 * time.Second,
	}))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if st := s.State(); st.Node.Addr != c.Cfg.Listen || authed != 1 {
		t.Fatalf("using %+v after %d authentications, want node c once", st, authed)
	}
	if len(asked) != 1 || asked[0] != b.ID.Fingerprint() || ev.refused != 2 {
		t.Fatalf("Trust asked about %v, %d refused; want b once, 2 refused", asked, ev.refused)
	}

	// One candidate only, with a changed key: Open says so, as before.
	_, err = client.Open(t.Context(), client.SessionConfig{
		Nodes:        []client.Candidate{{Addr: a.Cfg.Listen, Pin: c.ID.Fingerprint(), Trusted: true}},
		Authenticate: authAs(bob, signed),
	})
	if err == nil {
		t.Fatal("Open accepted a changed node key")
	}
}

// SwitchTo moves a working session to another node at once, announcing a
// switch (not a loss); Open skips a node that does not answer.
func TestSwitchToAndOpenPastASilentNode(t *testing.T) {
	testkit.LeakCheck(t)
	dir := t.TempDir()
	a := daemontest.Start(t, daemontest.Config(dir, "a"))
	b := daemontest.Start(t, daemontest.Config(dir, "b"))
	bob := e2e.NewUser()
	signed, _ := bob.SignedBundle(1, time.Hour)
	ev := &events{}
	s, err := client.Open(t.Context(), ev.config(client.SessionConfig{
		Nodes:          []client.Candidate{{Addr: silentAddr(t), Trusted: true}, {Addr: a.Cfg.Listen, Trusted: true}},
		Authenticate:   authAs(bob, signed),
		AttemptTimeout: 300 * time.Millisecond,
	}))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if st := s.State(); st.Node.Addr != a.Cfg.Listen {
		t.Fatalf("Open uses %+v, want node a", st)
	}
	s.SwitchTo(client.Candidate{Addr: b.Cfg.Listen, Pin: b.ID.Fingerprint(), Trusted: true})
	conn, err := s.Get(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if conn.Client.NodeFingerprint() != b.ID.Fingerprint() {
		t.Fatalf("after SwitchTo the session uses %s", conn.Client.NodeFingerprint().Short())
	}
	ev.mu.Lock()
	defer ev.mu.Unlock()
	if ev.lost != 0 || len(ev.switches) != 1 || ev.back != 1 {
		t.Fatalf("lost %d, switches %v, back %d; want a switch only", ev.lost, ev.switches, ev.back)
	}
}

// The user confirms a node (SwitchTo) just as the session, which had
// that node refused as not trusted yet, looks for the next candidate: the
// user's choice wins, and the session connects to the node confirmed,
// not to the next one (a chat once moved on to another new node so).
func TestSwitchToDuringARefusalWins(t *testing.T) {
	testkit.LeakCheck(t)
	dir := t.TempDir()
	ns := daemontest.Line(t, daemontest.Config(dir, "f"), daemontest.Config(dir, "o"))
	f, o := ns[0], ns[1]
	bob := e2e.NewUser()
	signed, _ := bob.SignedBundle(1, time.Hour)
	unconfirmed := client.Candidate{Addr: f.D.Addr()}
	confirmed := client.Candidate{Addr: f.D.Addr(), Pin: f.ID.Fingerprint(), Trusted: true}
	other := client.Candidate{Addr: o.D.Addr(), Pin: o.ID.Fingerprint(), Trusted: true}
	var s *client.Session
	calls := 0 // Candidates runs on Start's and Get's goroutine only
	ev := &events{}
	s, err := client.Start(t.Context(), ev.config(client.SessionConfig{
		Candidates: func(context.Context) []client.Candidate {
			if calls++; calls == 2 {
				// Asked after the refusal: the user confirms meanwhile.
				s.SwitchTo(confirmed)
			}
			return []client.Candidate{unconfirmed, other}
		},
		Trust: func(context.Context, client.Candidate, identity.Fingerprint) error {
			return errors.New("not confirmed yet")
		},
		Authenticate: authAs(bob, signed),
	}))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	c, err := s.Get(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if c.Node.Addr != f.D.Addr() {
		t.Fatalf("the session connected to %s, not to the node the user confirmed (%s)", c.Node.Addr, f.D.Addr())
	}
	if calls < 2 {
		t.Fatalf("the refusal did not ask for candidates (%d calls): the test did not test", calls)
	}
}
