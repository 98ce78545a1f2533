package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os/signal"
	"syscall"
	"time"

	"github.com/quicproquo/qpq/mesh/identity"
	"github.com/quicproquo/qpq/node/config"
	"github.com/quicproquo/qpq/node/daemon"
)

// shutdownGrace bounds how long SIGINT/SIGTERM may take (procd's
// term_timeout is longer, so procd never has to SIGKILL a healthy node).
const shutdownGrace = 5 * time.Second

const nodeAbout = `Run the mesh node: link to neighbour nodes over QUIC and serve clients.
On first start the node creates its identity (node.key, onion.key, mode
0600) in the data dir and prints its fingerprint. Every flag also has an
environment variable; flags win.

Examples:
  qpq node --data ./.qpq --listen 127.0.0.1:7443
  qpq node --data ./.qpq2 --listen 127.0.0.1:7444 --peer 127.0.0.1:7443#FINGERPRINT
  qpq node id --data ./.qpq --json`

func runNode(env *cliEnv, args []string) int {
	if len(args) > 0 && args[0] == "id" {
		return runNodeID(env, args[1:])
	}
	fs := newFlags(env, "node", "node [--data DIR] [--listen ADDR] [--peer ADDR#FP]... [--control PATH] [--log-level LEVEL]\n       [--store PATH] [--store-max-bytes SIZE] [--max-ttl DURATION] [--max-hops N]\n       [--mdns[=false]] [--mdns-iface REGEXP]... [--domain NAME] [--max-links N]\n       qpq node id [--data DIR] [--json]", nodeAbout)
	b := config.Bind(fs, "data", "listen", "peer", "control", "log-level", "store", "store-max-bytes", "max-ttl", "max-hops", "mdns", "mdns-iface", "domain", "max-links")
	cfg, err := b.Parse(args, env.getenv)
	if code, ok := parseStatus(env, fs, err); !ok {
		return code
	}
	log := slog.New(slog.NewTextHandler(env.stderr, &slog.HandlerOptions{Level: cfg.LogLevel}))

	d, err := daemon.New(cfg, log)
	if err != nil {
		log.Error("node did not start", "err", err)
		fmt.Fprintf(env.stderr, "qpq node: %v\n", err)
		return exitFailure
	}
	printBanner(env.stdout, d, cfg)
	log.Info("node running", "fingerprint", d.Fingerprint(), "listen", d.Addr(), "static_peers", len(cfg.Peers))

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	select {
	case err = <-done:
	case <-ctx.Done():
		log.Info("shutting down")
		select {
		case err = <-done:
		case <-time.After(shutdownGrace):
			log.Error("shutdown took longer than the grace period; exiting anyway", "grace", shutdownGrace)
			return exitFailure
		}
	}
	if err != nil {
		log.Error("node stopped", "err", err)
		return exitFailure
	}
	log.Info("node stopped")
	return exitOK
}

// printBanner tells a person who just started a node who it is and how to
// link a second node to it.
func printBanner(w io.Writer, d *daemon.Daemon, cfg config.Config) {
	fp := d.Fingerprint()
	addr := d.Addr()
	host, port, _ := net.SplitHostPort(addr)
	if ip := net.ParseIP(host); ip != nil && ip.IsUnspecified() {
		addr = net.JoinHostPort("THIS-NODE-IP", port)
	}
	fmt.Fprintf(w, "qpq node %s\n", fp)
	fmt.Fprintf(w, "  short code  %s\n", fp.Short())
	fmt.Fprintf(w, "  listening   %s (UDP, QUIC)\n", d.Addr())
	fmt.Fprintf(w, "  data dir    %s\n", cfg.DataDir)
	fmt.Fprintf(w, "  control     %s\n", cfg.Control)
	fmt.Fprintf(w, "Link a second node to this one:\n")
	fmt.Fprintf(w, "  qpq node --data DIR2 --listen %s --peer %s#%s\n", suggestListen(host, port), addr, fp)
	fmt.Fprintf(w, "Check links: qpq status --control %s\n", cfg.Control)
}

// suggestListen proposes a listen address for a second node on the same
// machine: the same host, the next port.
func suggestListen(host, port string) string {
	var p int
	fmt.Sscanf(port, "%d", &p)
	if p == 0 || p == 65535 {
		return net.JoinHostPort(host, "0")
	}
	return net.JoinHostPort(host, fmt.Sprint(p+1))
}

const nodeIDAbout = `Print the node's fingerprint and short code, creating the identity in the
data dir when it does not exist yet. Compare the short code read aloud with
what another node's operator sees before pinning it with --peer.`

func runNodeID(env *cliEnv, args []string) int {
	fs := newFlags(env, "node id", "node id [--data DIR] [--json]", nodeIDAbout)
	b := config.Bind(fs, "data")
	asJSON := fs.Bool("json", false, "print one JSON object with keys fingerprint and short")
	cfg, err := b.Parse(args, env.getenv)
	if code, ok := parseStatus(env, fs, err); !ok {
		return code
	}
	id, created, err := identity.LoadOrCreateNode(cfg.DataDir)
	if err != nil {
		fmt.Fprintf(env.stderr, "qpq node id: %v\n", err)
		return exitFailure
	}
	if created {
		fmt.Fprintf(env.stderr, "created a new node identity in %s\n", cfg.DataDir)
	}
	fp := id.Fingerprint()
	if *asJSON {
		json.NewEncoder(env.stdout).Encode(map[string]string{"fingerprint": fp.String(), "short": fp.Short()})
		return exitOK
	}
	fmt.Fprintf(env.stdout, "fingerprint  %s\nshort code   %s\n", fp, fp.Short())
	return exitOK
}
