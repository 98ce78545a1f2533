package daemon

import (
	"context"
	"log/slog"
	"net/netip"
	"path/filepath"
	"testing"
	"time"

	"capnproto.org/go/capnp/v3"

	"github.com/quicproquo/qpq/mesh/identity"
	"github.com/quicproquo/qpq/mesh/link"
	"github.com/quicproquo/qpq/node/config"
	"github.com/quicproquo/qpq/schemas"
)

// newDaemon makes a loopback daemon (real QUIC, real bbolt) and starts
// Run; the caller closes it (Close is safe twice, so a cleanup closes it
// as well).
func newDaemon(t *testing.T, edit func(*config.Config)) *Daemon {
	t.Helper()
	return newDaemonLogged(t, nil, edit)
}

// newDaemonLogged is newDaemon logging to log (nil: discard).
func newDaemonLogged(t *testing.T, log *slog.Logger, edit func(*config.Config)) *Daemon {
	t.Helper()
	id, err := identity.NewNode()
	if err != nil {
		t.Fatal(err)
	}
	cfg := config.Default()
	cfg.Listen = "127.0.0.1:0"
	cfg.MDNS = false
	cfg.Store = filepath.Join(t.TempDir(), "store.db")
	if edit != nil {
		edit(&cfg)
	}
	d, err := NewWithIdentity(cfg, id, log)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		d.Run(context.Background())
	}()
	t.Cleanup(func() {
		// Bounded, so a test that found Close hanging fails instead of
		// hanging the package.
		go d.Close()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Error("daemon did not shut down within 10s")
		}
	})
	return d
}

// fakePeer is a neighbour made of the link layer only: it links to a
// node and can call it, serving just hello and health itself.
type fakePeer struct {
	tr *link.Transport
	l  *link.Link
}

func dialPeer(t *testing.T, d *Daemon) *fakePeer {
	t.Helper()
	return dialPeerFrom(t, d, "127.0.0.1:0")
}

// dialPeerFrom is dialPeer from the local address local.
func dialPeerFrom(t *testing.T, d *Daemon, local string) *fakePeer {
	t.Helper()
	id, err := identity.NewNode()
	if err != nil {
		t.Fatal(err)
	}
	tr, err := link.NewDialer(local, id)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tr.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), dialTimeout)
	defer cancel()
	conn, err := tr.Dial(ctx, d.Addr(), d.Fingerprint(), link.ALPNPeer)
	if err != nil {
		t.Fatal(err)
	}
	hello := link.LocalHello("test", d.cfg.Domain)
	boot := capnp.Client(schemas.MeshPeer_ServerToClient(&link.PeerServer{Local: hello}))
	l, err := link.Establish(ctx, conn, true, boot, hello, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close(link.CodeClosing, "") })
	return &fakePeer{tr: tr, l: l}
}

const gossipBroadcast = schemas.Envelope_Kind_broadcast

func netipAddrPort(t *testing.T, s string) netip.AddrPort {
	t.Helper()
	ap, err := netip.ParseAddrPort(s)
	if err != nil {
		t.Fatal(err)
	}
	return ap
}
