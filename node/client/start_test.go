package client_test

import (
	"testing"
	"time"

	"github.com/quicproquo/qpq/mesh/testkit"
	"github.com/quicproquo/qpq/node/client"
	"github.com/quicproquo/qpq/node/daemon/daemontest"
	"github.com/quicproquo/qpq/node/e2e"
)

// A session started while its only node is down comes up all the same
// (connecting, then reconnecting as attempts fail); the Get waiting
// meanwhile connects once the node is back. Open, by contrast, fails.
func TestStartWithNoNodeReachableConnectsLater(t *testing.T) {
	testkit.LeakCheck(t)
	n := daemontest.Start(t, daemontest.Config(t.TempDir(), "n"))
	addr, fp := n.Cfg.Listen, n.ID.Fingerprint()
	n.Stop()
	bob := e2e.NewUser()
	signed, _ := bob.SignedBundle(1, time.Hour)
	cfg := client.SessionConfig{
		Nodes:          []client.Candidate{{Addr: addr, Pin: fp, Trusted: true}},
		Authenticate:   authAs(bob, signed),
		AttemptTimeout: time.Second,
		Backoff:        client.Backoff{Max: time.Second},
	}
	if s, err := client.Open(t.Context(), cfg); err == nil {
		s.Close()
		t.Fatal("Open with the only node down succeeded")
	}
	s, err := client.Start(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if st := s.State(); st.Up || st.Word() != "connecting" || st.Node.Addr != addr {
		t.Errorf("state at start: %+v (%s)", st, st.Word())
	}
	got := make(chan error, 1)
	go func() {
		_, err := s.Get(t.Context())
		got <- err
	}()
	testkit.WaitFor(t, 20*time.Second, "attempts to fail", func() bool { return s.State().Word() == "reconnecting" })
	n.Start()
	select {
	case err := <-got:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Get did not connect once the node was back")
	}
	if st := s.State(); !st.Up || st.Node.Pin != fp {
		t.Errorf("state after the node came back: %+v", st)
	}
}
