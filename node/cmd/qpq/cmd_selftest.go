package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"capnproto.org/go/capnp/v3"

	"github.com/quicproquo/qpq/gossip"
	"github.com/quicproquo/qpq/mesh/identity"
	"github.com/quicproquo/qpq/mesh/link"
	"github.com/quicproquo/qpq/node/buildinfo"
	"github.com/quicproquo/qpq/node/client"
	"github.com/quicproquo/qpq/node/config"
	"github.com/quicproquo/qpq/node/daemon"
	"github.com/quicproquo/qpq/node/e2e"
	"github.com/quicproquo/qpq/schemas"
)

// selftestTimeout is generous: under qemu-user a mips node is ~20x slower.
const selftestTimeout = 2 * time.Minute

const selftestAbout = `Start two nodes inside this process on 127.0.0.1 (no files, no mDNS),
link them with a pinned static peer, and exercise every path the binary has:
the link's hello and health RPCs, a client connection's hello and health,
a sealed direct message from a user at one node to a user at the other
through store and forward, acknowledged with its receipt, and a channel
message relayed from one node to the other.
Prints each step and exits 0 only if all of them work. Used by the qemu smoke
tests to run the real code on every router architecture.`

func runSelftest(env *cliEnv, args []string) int {
	fs := newFlags(env, "selftest", "selftest [-v]", selftestAbout)
	verbose := fs.Bool("v", false, "also print the nodes' logs")
	if code, ok := parseStatus(env, fs, fs.Parse(args)); !ok {
		return code
	}
	logw := io.Discard
	if *verbose {
		logw = env.stderr
	}
	log := slog.New(slog.NewTextHandler(logw, &slog.HandlerOptions{Level: slog.LevelDebug}))
	ctx, cancel := context.WithTimeout(context.Background(), selftestTimeout)
	defer cancel()
	if err := selftest(ctx, env.stdout, log); err != nil {
		fmt.Fprintf(env.stdout, "selftest FAILED: %v\n", err)
		return exitFailure
	}
	fmt.Fprintln(env.stdout, "selftest ok")
	return exitOK
}

func selftest(ctx context.Context, out io.Writer, log *slog.Logger) error {
	start := time.Now()
	step := func(format string, a ...any) {
		fmt.Fprintf(out, "selftest: %-40s %8.1f ms\n", fmt.Sprintf(format, a...), float64(time.Since(start).Microseconds())/1000)
	}
	fmt.Fprintf(out, "selftest: %s\n", buildinfo.String())

	dir, err := os.MkdirTemp("", "qpq-selftest-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)

	ida, err := identity.NewNode()
	if err != nil {
		return err
	}
	idb, err := identity.NewNode()
	if err != nil {
		return err
	}
	cfgA := config.Default()
	cfgA.Listen = "127.0.0.1:0"
	cfgA.MDNS = false
	cfgA.Store = filepath.Join(dir, "a.db")
	a, err := daemon.NewWithIdentity(cfgA, ida, log.With("node", "a"))
	if err != nil {
		return fmt.Errorf("start node a: %w", err)
	}
	defer a.Close()
	step("node a listening on %s", a.Addr())

	cfgB := config.Default()
	cfgB.Listen = "127.0.0.1:0"
	cfgB.MDNS = false
	cfgB.Store = filepath.Join(dir, "b.db")
	cfgB.Peers = []link.PeerAddr{{Addr: a.Addr(), FP: ida.Fingerprint()}}
	b, err := daemon.NewWithIdentity(cfgB, idb, log.With("node", "b"))
	if err != nil {
		return fmt.Errorf("start node b: %w", err)
	}
	defer b.Close()
	step("node b listening on %s", b.Addr())

	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	done := make(chan struct{}, 2)
	for _, d := range []*daemon.Daemon{a, b} {
		go func() { d.Run(runCtx); done <- struct{}{} }()
	}
	defer func() { stop(); <-done; <-done }()

	if err := waitLinked(ctx, a, idb.Fingerprint(), b, ida.Fingerprint()); err != nil {
		return err
	}
	step("link a<->b up (hello answered both ways)")

	if err := clientHealth(ctx, a.Addr(), ida.Fingerprint()); err != nil {
		return fmt.Errorf("client RPC to node a: %w", err)
	}
	step("client hello and health on node a")

	if err := selftestDM(ctx, a.Addr(), ida.Fingerprint(), b.Addr(), idb.Fingerprint(), step); err != nil {
		return fmt.Errorf("direct message: %w", err)
	}
	return nil
}

// selftestDM carries a sealed DM from a user at node a to a user at node b
// through store and forward, and acknowledges it.
func selftestDM(ctx context.Context, addrA string, fpA identity.Fingerprint, addrB string, fpB identity.Fingerprint, step func(string, ...any)) error {
	alice, bob := e2e.NewUser(), e2e.NewUser()
	bobBundle, err := bob.SignedBundle(1, 24*time.Hour)
	if err != nil {
		return err
	}
	cb, err := client.Dial(ctx, addrB, fpB)
	if err != nil {
		return err
	}
	defer cb.Close()
	mb, err := cb.Authenticate(ctx, bob, bobBundle)
	if err != nil {
		return err
	}
	defer mb.Release()
	step("bob authenticated at node b")

	ca, err := client.Dial(ctx, addrA, fpA)
	if err != nil {
		return err
	}
	defer ca.Close()
	var b e2e.Bundle
	for {
		if b, err = ca.LookupBundle(ctx, bob.Fingerprint()); err == nil {
			break
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("bob's bundle never reached node a: %w", err)
		case <-time.After(20 * time.Millisecond):
		}
	}
	step("bob's key bundle reached node a")

	body := []byte("selftest: hello bob, from alice")
	sealed, err := e2e.SealDM(alice, b, body, time.Now())
	if err != nil {
		return err
	}
	env := gossip.Envelope{Kind: schemas.Envelope_Kind_dm, Destination: append([]byte(nil), b.Fingerprint[:]...),
		TTLSeconds: 3600, HopLimit: 4, ReceiptTag: sealed.ReceiptTag[:], Payload: sealed.Payload}
	env.ID = gossip.ComputeID(env.Kind, env.Destination, env.ReceiptTag, env.Payload)
	if _, err := ca.Enqueue(ctx, env); err != nil {
		return err
	}
	step("alice's DM enqueued at node a (%d bytes sealed)", len(sealed.Payload))

	var got []gossip.Envelope
	for len(got) == 0 {
		if got, err = mb.Fetch(ctx, 16, 5*time.Second); err != nil {
			return err
		}
		if ctx.Err() != nil {
			return fmt.Errorf("the DM never reached node b")
		}
	}
	m, err := e2e.OpenDM(bob, got[0].Payload)
	if err != nil {
		return err
	}
	if got[0].ID != env.ID || string(m.Body) != string(body) || m.From != alice.Fingerprint() {
		return fmt.Errorf("bob got %q from %s, want %q from alice", m.Body, m.From.Short(), body)
	}
	step("bob fetched and opened it at node b")
	if n, err := mb.Ack(ctx, [][]byte{m.ReceiptSecret[:]}); err != nil || n != 1 {
		return fmt.Errorf("ack deleted %d envelopes (%v), want 1", n, err)
	}
	step("bob acknowledged it (receipt deletes copies)")

	// A channel message: alice posts at a, bob (a member) reads it at b.
	key := e2e.NewChannelKey()
	payload, err := e2e.SealChannel(alice, key, []byte("selftest: channel hello"), time.Now())
	if err != nil {
		return err
	}
	chID := key.ID()
	bc := gossip.Envelope{Kind: schemas.Envelope_Kind_broadcast, Destination: chID[:], TTLSeconds: 3600, HopLimit: 3, Payload: payload}
	bc.ID = gossip.ComputeID(bc.Kind, bc.Destination, nil, bc.Payload)
	if _, err := ca.Enqueue(ctx, bc); err != nil {
		return err
	}
	var chGot []gossip.Envelope
	for len(chGot) == 0 {
		if chGot, err = cb.ChannelFetch(ctx, [][32]byte{chID}, nil, 16, 5*time.Second); err != nil {
			return err
		}
		if ctx.Err() != nil {
			return fmt.Errorf("the channel message never reached node b")
		}
	}
	cm, err := e2e.OpenChannel(key, chGot[0].Payload)
	if err != nil || string(cm.Body) != "selftest: channel hello" || cm.From != alice.Fingerprint() {
		return fmt.Errorf("channel message at b: %q from %s (%v)", cm.Body, cm.From.Short(), err)
	}
	step("channel message posted at a, read at b")
	return nil
}

// waitLinked waits until each node lists the other.
func waitLinked(ctx context.Context, a *daemon.Daemon, bfp identity.Fingerprint, b *daemon.Daemon, afp identity.Fingerprint) error {
	has := func(d *daemon.Daemon, fp identity.Fingerprint) bool {
		for _, p := range d.Status().Peers {
			if p.Fingerprint == fp.String() {
				return true
			}
		}
		return false
	}
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for !(has(a, bfp) && has(b, afp)) {
		select {
		case <-ctx.Done():
			return fmt.Errorf("nodes did not link: %w", ctx.Err())
		case <-t.C:
		}
	}
	return nil
}

// clientHealth connects as a client (ALPN capnp, no certificate) and calls
// hello and health, expecting the node to report one link.
func clientHealth(ctx context.Context, addr string, fp identity.Fingerprint) error {
	d, err := link.NewDialer("127.0.0.1:0", nil)
	if err != nil {
		return err
	}
	defer d.Close()
	conn, err := d.Dial(ctx, addr, fp, link.ALPNClient)
	if err != nil {
		return err
	}
	rc, boot, err := link.OpenStream(ctx, conn, capnp.Client{}, nil)
	if err != nil {
		return err
	}
	defer rc.Close()
	n := schemas.Node(boot)
	defer n.Release()

	hf, rel := n.Hello(ctx, func(p schemas.Node_hello_Params) error {
		h, err := p.NewHello()
		if err != nil {
			return err
		}
		return link.WriteHello(h, link.LocalHello(buildinfo.String(), config.DefaultDomain))
	})
	defer rel()
	hres, err := hf.Struct()
	if err != nil {
		return fmt.Errorf("hello: %w", err)
	}
	h, err := hres.Hello()
	if err != nil {
		return err
	}
	theirs, err := link.ReadHello(h)
	if err != nil {
		return err
	}
	if theirs.Version != link.ProtocolVersion {
		return fmt.Errorf("hello: node speaks version %d, want %d", theirs.Version, link.ProtocolVersion)
	}
	ff, rel2 := n.Health(ctx, nil)
	defer rel2()
	fres, err := ff.Struct()
	if err != nil {
		return fmt.Errorf("health: %w", err)
	}
	health, err := fres.Health()
	if err != nil {
		return err
	}
	if health.Links() != 1 {
		return fmt.Errorf("health: node reports %d links, want 1", health.Links())
	}
	return nil
}
