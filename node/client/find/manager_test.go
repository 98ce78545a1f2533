package find_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/quicproquo/qpq/mesh/discovery"
	"github.com/quicproquo/qpq/mesh/identity"
	"github.com/quicproquo/qpq/mesh/testkit"
	"github.com/quicproquo/qpq/node/client"
	"github.com/quicproquo/qpq/node/client/find"
	"github.com/quicproquo/qpq/node/daemon/daemontest"
	"github.com/quicproquo/qpq/node/e2e"
)

// The manager over real loopback nodes; the mDNS browse is replaced by a
// fixed answer (mDNS stays off on loopback).
func TestManagerPeersServerAndAutoAskBeforeANewNode(t *testing.T) {
	testkit.LeakCheck(t)
	dir := t.TempDir()
	a := daemontest.Start(t, daemontest.Config(dir, "a"))
	b := daemontest.Start(t, daemontest.Config(dir, "b"))
	c := daemontest.Start(t, daemontest.Config(dir, "c"))
	bob := e2e.NewUser()
	signed, _ := bob.SignedBundle(1, time.Hour)
	var mu sync.Mutex
	var asked []identity.Fingerprint
	s, err := client.Open(t.Context(), client.SessionConfig{
		Nodes: []client.Candidate{{Addr: a.Cfg.Listen, Pin: a.ID.Fingerprint(), Trusted: true}},
		Trust: func(_ context.Context, _ client.Candidate, fp identity.Fingerprint) error {
			mu.Lock()
			defer mu.Unlock()
			asked = append(asked, fp)
			return errors.New("declined")
		},
		Authenticate: func(ctx context.Context, c *client.Client) (*client.Mailbox, error) {
			return c.Authenticate(ctx, bob, signed)
		},
		AttemptTimeout: 2 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if w := s.State().Word(); w != "connected" {
		t.Fatalf("link %q", w)
	}
	found := []discovery.Found{{FP: a.ID.Fingerprint(), Addr: a.Cfg.Listen, Iface: "lo"}, {FP: b.ID.Fingerprint(), Addr: b.Cfg.Listen, Iface: "lo"}}
	trusted := map[identity.Fingerprint]bool{a.ID.Fingerprint(): true, b.ID.Fingerprint(): true}
	cfg := find.Config{
		Lookup:  func(context.Context) ([]discovery.Found, error) { return found, nil },
		Trusted: func(fp identity.Fingerprint) bool { return trusted[fp] },
	}
	m := find.NewManager(s, cfg, find.AutoConfig{}, time.Hour)
	defer m.Close()

	ns, cur, err := m.Peers(t.Context())
	if err != nil || len(ns) != 2 || cur < 0 || ns[cur].Addr != a.Cfg.Listen || ns[0].RTT <= 0 || ns[1].RTT <= 0 {
		t.Fatalf("peers %+v current %d: %v", ns, cur, err)
	}

	m.Server(client.Candidate{Addr: b.Cfg.Listen, Pin: b.ID.Fingerprint(), Trusted: true})
	if c, err := s.Get(t.Context()); err != nil || c.Client.NodeFingerprint() != b.ID.Fingerprint() || m.Mode() != find.ModeFixed {
		t.Fatalf("after Server: %v, mode %s", err, m.Mode())
	}
	// Auto: both answer in about the same time; the current one stays.
	n, err := m.Auto(t.Context())
	if err != nil || n.Addr != b.Cfg.Listen || m.Mode() != find.ModeAuto {
		t.Fatalf("Auto picked %s (%v), mode %s; want the current node kept", n.Addr, err, m.Mode())
	}
	if c, err := s.Get(t.Context()); err != nil || c.Client.NodeFingerprint() != b.ID.Fingerprint() {
		t.Fatalf("Auto moved the session: %v", err)
	}

	// Only a never-seen node is around: Auto picks it, the session asks
	// before authenticating, the user declines, the session goes back.
	m.Server(client.Candidate{Addr: a.Cfg.Listen, Pin: a.ID.Fingerprint(), Trusted: true})
	if _, err := s.Get(t.Context()); err != nil {
		t.Fatal(err)
	}
	found = []discovery.Found{{FP: c.ID.Fingerprint(), Addr: c.Cfg.Listen, Iface: "lo"}}
	if n, err := m.Auto(t.Context()); err != nil || n.Addr != c.Cfg.Listen || n.Trusted {
		t.Fatalf("Auto with an untrusted node only: %+v %v", n, err)
	}
	conn, err := s.Get(t.Context())
	if err != nil || conn.Client.NodeFingerprint() != a.ID.Fingerprint() {
		t.Fatalf("after declining: %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(asked) != 1 || asked[0] != c.ID.Fingerprint() {
		t.Fatalf("asked about %v, want node c once", asked)
	}
}
