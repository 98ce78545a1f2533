// Package daemontest runs real nodes in a test's process: loopback QUIC on
// 127.0.0.1, mDNS off, bbolt stores in the test's temporary directory,
// alone or as a line of linked nodes. It is for tests only: no non-test
// code imports it, so it never reaches the router binary. (The daemon's
// own internal tests cannot import it; they keep their rig in
// rig_test.go.)
package daemontest

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/quicproquo/qpq/mesh/identity"
	"github.com/quicproquo/qpq/mesh/link"
	"github.com/quicproquo/qpq/mesh/testkit"
	"github.com/quicproquo/qpq/node/config"
	"github.com/quicproquo/qpq/node/daemon"
)

// stopWithin bounds a node's shutdown, so a test that finds Close hanging
// fails instead of hanging the package.
const stopWithin = 10 * time.Second

// Config is the configuration of a loopback node whose store is
// dir/name.db: it listens on 127.0.0.1 (any port) with mDNS off.
func Config(dir, name string) config.Config {
	cfg := config.Default()
	cfg.Listen = "127.0.0.1:0"
	cfg.MDNS = false
	cfg.Store = filepath.Join(dir, name+".db")
	return cfg
}

// Node is an in-process node that can be stopped and started again on
// the same address with the same key and store.
type Node struct {
	t   testing.TB
	ID  *identity.Node
	Cfg config.Config
	D   *daemon.Daemon // nil while stopped

	cancel context.CancelFunc
	done   chan struct{}
}

// Start runs a node with a new identity and configuration cfg until the
// test ends. Cfg.Listen is then the address it got, so a restart comes
// back on the same port.
func Start(t testing.TB, cfg config.Config) *Node {
	t.Helper()
	id, err := identity.NewNode()
	if err != nil {
		t.Fatal(err)
	}
	n := &Node{t: t, ID: id, Cfg: cfg}
	n.Start()
	n.Cfg.Listen = n.D.Addr()
	t.Cleanup(n.Stop)
	return n
}

// Start starts a stopped node again.
func (n *Node) Start() {
	n.t.Helper()
	d, err := daemon.NewWithIdentity(n.Cfg, n.ID, nil)
	if err != nil {
		n.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	n.D, n.cancel, n.done = d, cancel, make(chan struct{})
	go func(done chan struct{}) {
		defer close(done)
		d.Run(ctx)
	}(n.done)
}

// Stop stops the node and waits for it, at most stopWithin. Safe to call
// when stopped.
func (n *Node) Stop() {
	if n.D == nil {
		return
	}
	n.cancel()
	closed := make(chan struct{})
	go func(d *daemon.Daemon) {
		defer close(closed)
		d.Close()
	}(n.D)
	select {
	case <-n.done:
		<-closed
	case <-time.After(stopWithin):
		n.t.Errorf("node %s did not shut down within %v", n.ID.Fingerprint().Short(), stopWithin)
	}
	n.D = nil
}

// PeerAddr is the node's address and fingerprint, as a neighbour dials it.
func (n *Node) PeerAddr() link.PeerAddr {
	return link.PeerAddr{Addr: n.D.Addr(), FP: n.ID.Fingerprint()}
}

// Linked reports whether d holds a link to the node fp.
func Linked(d *daemon.Daemon, fp identity.Fingerprint) bool {
	for _, p := range d.Status().Peers {
		if p.Fingerprint == fp.String() {
			return true
		}
	}
	return false
}

// Line starts one node per configuration, each a static peer of the one
// before, and waits until every neighbouring pair is linked both ways.
func Line(t testing.TB, cfgs ...config.Config) []*Node {
	t.Helper()
	var ns []*Node
	for i, cfg := range cfgs {
		if i > 0 {
			cfg.Peers = append(cfg.Peers, ns[i-1].PeerAddr())
		}
		ns = append(ns, Start(t, cfg))
	}
	for i := 0; i+1 < len(ns); i++ {
		a, b := ns[i], ns[i+1]
		testkit.WaitFor(t, 20*time.Second, "the line's nodes to link", func() bool {
			return Linked(a.D, b.ID.Fingerprint()) && Linked(b.D, a.ID.Fingerprint())
		})
	}
	return ns
}
