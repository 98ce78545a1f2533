// Command qpq-bridge is the gateway build of the qpq node: a node on its
// mesh island (every `qpq node` setting applies) that also joins other
// islands' bridges over libp2p (the --bridge-* settings). It is built on
// its own (`make bridge`), for gateways with an uplink; routers run qpq.
//
//	qpq-bridge [--uci FILE] [node flags] --bridge-island NAME --bridge-secret S --bridge-allow FP ... [--bridge-peer MULTIADDR]...
//	qpq-bridge id [--data DIR]
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/quicproquo/qpq/mesh/identity"
	"github.com/quicproquo/qpq/node/bridge/p2p"
	"github.com/quicproquo/qpq/node/config"
	"github.com/quicproquo/qpq/node/daemon"
	"github.com/quicproquo/qpq/node/uci"
)

const (
	exitOK      = 0
	exitFailure = 1
	exitUsage   = 2
	// shutdownGrace bounds how long SIGINT/SIGTERM may take.
	shutdownGrace = 5 * time.Second
)

const about = `Run a bridge: a qpq node on its mesh island that also carries DMs,
receipts, key bundles, node descriptors and the bridged channels to the
bridges of other islands over libp2p. Every qpq node flag applies; the
--bridge-* flags (uci: config bridge 'bridge') set the bridge.

  qpq-bridge id [--data DIR]   print this bridge's fingerprint and libp2p peer id

Examples:
  qpq-bridge --data ./.bridge --listen 127.0.0.1:7443 --bridge-island nord \
    --bridge-secret 'a long shared secret' --bridge-listen /ip4/127.0.0.1/udp/7444/quic-v1 \
    --bridge-allow FINGERPRINT --bridge-peer /ip4/192.0.2.7/udp/7444/quic-v1/p2p/PEERID
  qpq-bridge --uci /etc/config/qpq`

// nodeOptions are the qpq node settings a bridge takes, as `qpq node` does.
var nodeOptions = []string{"data", "listen", "peer", "control", "log-level", "store", "store-max-bytes", "max-ttl", "max-hops", "mdns", "mdns-iface", "domain", "max-links",
	"placement", "placement-min-age", "placement-fallback", "placement-pull", "onion-relay", "onion-key-period", "decoy-rate", "loop-rate", "mix-delay"}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr, os.Getenv))
}

func run(args []string, stdout, stderr io.Writer, getenv func(string) string) int {
	if len(args) > 0 && args[0] == "id" {
		return runID(args[1:], stdout, stderr, getenv)
	}
	fs := flag.NewFlagSet("qpq-bridge", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintln(stderr, about)
		fmt.Fprintln(stderr)
		fs.PrintDefaults()
	}
	names := append([]string(nil), nodeOptions...)
	for _, o := range config.Options() {
		if o.Bridge {
			names = append(names, o.Name)
		}
	}
	b := config.Bind(fs, names...)
	uciPath := fs.String("uci", "", "read the settings from this uci file (/etc/config/qpq: sections main and bridge) instead of QPQ_* variables; flags beside it override it")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		return exitUsage
	}
	base := config.Default()
	env := getenv
	if *uciPath != "" {
		f, err := os.Open(*uciPath)
		if err != nil {
			fmt.Fprintf(stderr, "qpq-bridge: --uci: %v\n", err)
			return exitUsage
		}
		file, probs := uci.Parse(f)
		f.Close()
		cfg, vprobs := config.FromUCI(file)
		probs = append(probs, vprobs...)
		for _, p := range probs {
			fmt.Fprintln(stderr, p.Format(*uciPath))
		}
		if len(probs) > 0 {
			fmt.Fprintf(stderr, "qpq-bridge: not starting: %s has %d problem(s)\n", *uciPath, len(probs))
			return exitUsage
		}
		base, env = cfg, nil
	}
	cfg, err := b.Over(base, env)
	if err == nil {
		err = cfg.Finish()
	}
	if err == nil {
		err = cfg.CheckBridge()
	}
	if err != nil {
		fmt.Fprintf(stderr, "qpq-bridge: %v\n", err)
		return exitUsage
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: cfg.LogLevel}))
	id, created, err := identity.LoadOrCreateNode(cfg.DataDir)
	if err != nil {
		log.Error("bridge did not start", "err", fmt.Errorf("node identity: %w", err))
		return exitFailure
	}
	if created {
		log.Info("created node identity", "dir", cfg.DataDir, "fingerprint", id.Fingerprint())
	}
	d, err := daemon.NewWithIdentity(cfg, id, log)
	if err != nil {
		log.Error("bridge did not start", "err", err)
		return exitFailure
	}
	br, err := p2p.New(d, id, cfg, log)
	if err != nil {
		d.Close()
		var oe *config.OptionError
		if errors.As(err, &oe) {
			fmt.Fprintf(stderr, "qpq-bridge: %v\n", err)
			return exitUsage
		}
		log.Error("bridge did not start", "err", err)
		return exitFailure
	}
	fmt.Fprintf(stdout, "qpq-bridge %s of island %s\n  node listens on %s\n", id.Fingerprint(), cfg.Bridge.Island, d.Addr())
	for _, a := range br.Addrs() {
		fmt.Fprintf(stdout, "  bridge at %s\n", a)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	brDone := make(chan struct{})
	go func() {
		defer close(brDone)
		br.Run(ctx)
	}()
	<-ctx.Done()
	log.Info("shutting down")
	grace := time.After(shutdownGrace)
	go br.Close()
	select {
	case <-brDone:
	case <-grace:
		log.Error("shutdown took longer than the grace period; exiting anyway", "grace", shutdownGrace)
		return exitFailure
	}
	select {
	case err = <-done:
	case <-grace:
		log.Error("shutdown took longer than the grace period; exiting anyway", "grace", shutdownGrace)
		return exitFailure
	}
	if err != nil {
		log.Error("bridge did not shut down cleanly", "err", err)
		return exitFailure
	}
	return exitOK
}

// runID prints the bridge's fingerprint and libp2p peer id, creating the
// identity on first use, for the other operators' allow lists and peers.
func runID(args []string, stdout, stderr io.Writer, getenv func(string) string) int {
	fs := flag.NewFlagSet("qpq-bridge id", flag.ContinueOnError)
	fs.SetOutput(stderr)
	b := config.Bind(fs, "data")
	if err := fs.Parse(args); err != nil {
		return exitUsage
	}
	cfg, err := b.Over(config.Default(), getenv)
	if err == nil {
		err = cfg.Finish()
	}
	if err != nil {
		fmt.Fprintf(stderr, "qpq-bridge id: %v\n", err)
		return exitUsage
	}
	id, _, err := identity.LoadOrCreateNode(cfg.DataDir)
	if err != nil {
		fmt.Fprintf(stderr, "qpq-bridge id: %v\n", err)
		return exitFailure
	}
	pid, err := p2p.PeerID(id)
	if err != nil {
		fmt.Fprintf(stderr, "qpq-bridge id: %v\n", err)
		return exitFailure
	}
	fmt.Fprintf(stdout, "fingerprint %s\npeer id     %s\n", id.Fingerprint(), pid)
	fmt.Fprintf(stdout, "other bridges list it as: --bridge-allow %s --bridge-peer /ip4/<address>/udp/<port>/quic-v1/p2p/%s\n", id.Fingerprint(), pid)
	return exitOK
}
