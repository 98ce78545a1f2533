package daemon

import (
	"context"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/quicproquo/qpq/mesh/link"
	"github.com/quicproquo/qpq/node/config"

	"github.com/quicproquo/qpq/mesh/testkit"
)

// countingHandler counts log records whose message contains substr, at
// every level.
type countingHandler struct {
	substr string
	n      *atomic.Int64
}

func (h countingHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h countingHandler) Handle(_ context.Context, r slog.Record) error {
	if strings.Contains(r.Message, h.substr) {
		h.n.Add(1)
	}
	return nil
}
func (h countingHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h countingHandler) WithGroup(string) slog.Handler      { return h }

// startDaemon runs a daemon on loopback (real QUIC, real bbolt) until the
// test ends.
func startDaemon(t *testing.T, maxLinks int, peers []link.PeerAddr, log *slog.Logger) *Daemon {
	t.Helper()
	return newDaemonLogged(t, log, func(cfg *config.Config) {
		cfg.MaxLinks = maxLinks
		cfg.Peers = peers
	})
}

// A node learnt by exchange that refuses us at its inbound cap is dialled
// once, then left alone for the backoff: no storm of handshakes.
func TestRefusedAtCapIsNotRedialledAtOnce(t *testing.T) {
	testkit.LeakCheck(t)
	var refusals atomic.Int64
	hub := startDaemon(t, 1, nil, slog.New(countingHandler{substr: "at the inbound cap", n: &refusals}))
	hubAddr := link.PeerAddr{Addr: hub.Addr(), FP: hub.Fingerprint()}
	for range hub.inboundCap() {
		startDaemon(t, 1, []link.PeerAddr{hubAddr}, nil)
	}
	testkit.WaitFor(t, 20*time.Second, "the hub to fill its inbound cap", func() bool { return len(hub.Status().Peers) == hub.inboundCap() })

	x := startDaemon(t, 8, nil, nil)
	x.learn(hub.Fingerprint(), []string{hub.Addr()}, viaExchange)
	testkit.WaitFor(t, 10*time.Second, "the hub to refuse x", func() bool { return refusals.Load() > 0 })
	// Kicks (finished dials, more nodes learnt) must not bring it back.
	// After each, x is let settle: the kick taken and no dial under way,
	// so a redial it caused has been made and refused before the count.
	for range 20 {
		x.kickSelect()
		testkit.Settle(t, 10*time.Second, "x's selection", func() bool {
			x.mu.Lock()
			defer x.mu.Unlock()
			return len(x.kick) == 0 && len(x.dialing) == 0
		}, refusals.Load)
	}
	if n := refusals.Load(); n != 1 {
		t.Errorf("the hub refused x %d times over 20 kicks, want once (then 30 s of backoff)", n)
	}
	if st := x.Status(); len(st.Peers) != 0 {
		t.Errorf("x holds %d links to a hub at its cap", len(st.Peers))
	}
}

// A planned dial is never seen as neither dialling nor linked: with a
// node learnt and linked, nothing is counted as under way, and the link
// says how it came to be.
func TestPlannedLinkIsRegisteredWithItsPick(t *testing.T) {
	testkit.LeakCheck(t)
	a := startDaemon(t, 8, nil, nil)
	b := startDaemon(t, 8, nil, nil)
	a.learn(b.Fingerprint(), []string{b.Addr()}, viaMDNS)
	testkit.WaitFor(t, 10*time.Second, "a to link to b", func() bool { return len(a.Status().Peers) == 1 })
	// b registers the link once it has answered a's hello, which may be
	// just after a sees it up.
	testkit.WaitFor(t, 10*time.Second, "b to register the link", func() bool { return len(b.Status().Peers) == 1 })
	a.mu.Lock()
	dialling := len(a.dialing)
	a.mu.Unlock()
	if dialling != 0 {
		t.Errorf("%d dials still counted as under way after the link came up", dialling)
	}
	p := a.Status().Peers[0]
	if p.Via != viaMDNS || p.Pick != "random" || p.Direction != "outbound" {
		t.Errorf("a's link to b: via %q pick %q direction %q; want mdns, random (the first pick), outbound", p.Via, p.Pick, p.Direction)
	}
	if bp := b.Status().Peers; len(bp) != 1 || bp[0].Via != viaInbound || bp[0].Pick != "" {
		t.Errorf("b's view of the link: %+v; want one inbound link with no pick", bp)
	}
}
