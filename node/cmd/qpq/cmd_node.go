package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/debug"
	"strings"
	"syscall"
	"time"

	"github.com/quicproquo/qpq/mesh/identity"
	"github.com/quicproquo/qpq/node/config"
	"github.com/quicproquo/qpq/node/daemon"
	"github.com/quicproquo/qpq/node/uci"
)

// shutdownGrace bounds how long SIGINT/SIGTERM may take (procd's
// term_timeout is longer, so procd never has to SIGKILL a healthy node).
const shutdownGrace = 5 * time.Second

const nodeAbout = `Run the mesh node: link to neighbour nodes over QUIC and serve clients.
On first start the node creates its identity (node.key, onion.key, mode
0600) in the data dir and prints its fingerprint. Every flag also has an
environment variable; flags win.

With --uci FILE (the OpenWrt service: --uci /etc/config/qpq) the node reads
its settings from that uci file, as qpq config check reads it, instead of
from QPQ_* environment variables; flags given beside --uci override the
file. A file with any problem is refused (exit 2, each problem printed as
qpq config check prints it) and no node starts. The file's mem_limit is
applied as Go's soft memory limit (0: none) unless GOMEMLIMIT is set.

Examples:
  qpq node --data ./.qpq --listen 127.0.0.1:7443
  qpq node --data ./.qpq2 --listen 127.0.0.1:7444 --peer 127.0.0.1:7443#FINGERPRINT
  qpq node --uci /etc/config/qpq
  qpq node id --data ./.qpq --json`

func runNode(env *cliEnv, args []string) int {
	if len(args) > 0 && args[0] == "id" {
		return runNodeID(env, args[1:])
	}
	fs := newFlags(env, "node", "node [--uci FILE] [--data DIR] [--listen ADDR] [--peer ADDR#FP]... [--control PATH] [--log-level LEVEL]\n       [--store PATH] [--store-max-bytes SIZE] [--max-ttl DURATION] [--max-hops N]\n       [--mdns[=false]] [--mdns-iface REGEXP]... [--domain NAME] [--max-links N]\n       [--placement K] [--onion-relay[=false]] [--decoy-rate CELLS] [--loop-rate LOOPS] [--mix-delay DURATION] ...\n       qpq node id [--data DIR] [--json]", nodeAbout)
	b := config.Bind(fs, "data", "listen", "peer", "control", "log-level", "store", "store-max-bytes", "max-ttl", "max-hops", "mdns", "mdns-iface", "domain", "max-links",
		"placement", "placement-min-age", "placement-fallback", "placement-pull", "onion-relay", "onion-key-period", "decoy-rate", "loop-rate", "mix-delay")
	uciPath := fs.String("uci", "", "read the settings from this uci file (/etc/config/qpq) instead of QPQ_* variables; flags beside it override it")
	if code, ok := parseStatus(env, fs, fs.Parse(args)); !ok {
		return code
	}
	base, getenv := config.Default(), env.getenv
	var file *uci.File
	if *uciPath != "" {
		var code int
		if base, file, code = nodeUCI(env, *uciPath); code != exitOK {
			return code
		}
		getenv = nil
	}
	cfg, err := b.Over(base, getenv)
	if code, ok := parseStatus(env, fs, err); !ok {
		return code
	}
	log := slog.New(slog.NewTextHandler(env.stderr, &slog.HandlerOptions{Level: cfg.LogLevel}))
	if file != nil {
		for _, p := range config.UCIWarnings(file, cfg) {
			p.Msg = strings.TrimPrefix(p.Msg, "warning: ") // the level says it
			log.Warn(p.Format(*uciPath))
		}
		applyMemLimit(env, cfg, log)
		logSettings(log, *uciPath, cfg)
	} else {
		for _, w := range cfg.Warnings() {
			log.Warn(w.Msg, "option", "--"+w.Option)
		}
	}

	d, err := daemon.New(cfg, log)
	if err != nil {
		log.Error("node did not start", "err", err)
		return exitFailure
	}
	printBanner(env.stdout, d, cfg, executablePath())
	log.Info("node running", "fingerprint", d.Fingerprint(), "listen", d.Addr(), "static_peers", len(cfg.Peers))

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	// Run returns only once ctx is cancelled (nothing else closes d), after
	// it has shut the node down; its error, if it ever has one, is
	// reported here and nowhere else.
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	<-ctx.Done()
	log.Info("shutting down")
	select {
	case err = <-done:
	case <-time.After(shutdownGrace):
		log.Error("shutdown took longer than the grace period; exiting anyway", "grace", shutdownGrace)
		return exitFailure
	}
	if err != nil {
		log.Error("node did not shut down cleanly", "err", err)
		return exitFailure
	}
	log.Info("node stopped")
	return exitOK
}

// nodeUCI reads the uci file at path for `qpq node --uci`, exactly as `qpq
// config check` does. On any problem it prints each one to stderr as the
// check prints them and returns exitUsage: the node must not start on a
// file the check refuses.
func nodeUCI(env *cliEnv, path string) (config.Config, *uci.File, int) {
	cfg, f, probs, err := readUCI(path)
	if err != nil {
		fmt.Fprintf(env.stderr, "qpq node: --uci: %v\n", err)
		return cfg, nil, exitUsage
	}
	for _, p := range probs {
		fmt.Fprintln(env.stderr, p.Format(path))
	}
	if len(probs) > 0 {
		fmt.Fprintf(env.stderr, "qpq node: not starting: %s has %d problem(s) (qpq config check %s)\n", path, len(probs), path)
		return cfg, nil, exitUsage
	}
	return cfg, f, exitOK
}

// applyMemLimit sets Go's soft memory limit to the uci mem_limit (0 is no
// limit, Go's default). A GOMEMLIMIT environment variable, which the Go
// runtime has already applied, wins.
func applyMemLimit(env *cliEnv, cfg config.Config, log *slog.Logger) {
	if cfg.MemLimit == 0 {
		return
	}
	if v := env.getenv("GOMEMLIMIT"); v != "" {
		log.Info("GOMEMLIMIT is set; ignoring mem_limit", "GOMEMLIMIT", v, "mem_limit", cfg.MemLimit)
		return
	}
	debug.SetMemoryLimit(cfg.MemLimit)
}

// logSettings logs, in one line, the settings a node read from uci, so a
// volunteer sees in logread what the service really runs with.
func logSettings(log *slog.Logger, path string, cfg config.Config) {
	ifaces := make([]string, len(cfg.MDNSIfaces))
	for i, re := range cfg.MDNSIfaces {
		ifaces[i] = re.String()
	}
	mdns, ifaceList, memLimit := "off", "all", "none"
	if cfg.MDNS {
		mdns = "on"
	}
	if len(ifaces) > 0 {
		ifaceList = strings.Join(ifaces, ",")
	}
	// The limit in force, whether from mem_limit or GOMEMLIMIT (a negative
	// argument only reads it).
	if n := debug.SetMemoryLimit(-1); n != math.MaxInt64 {
		memLimit = fmt.Sprint(n)
	}
	log.Info("settings", "uci", path, "listen", cfg.Listen, "data", cfg.DataDir, "store", cfg.Store,
		"mdns", mdns, "mdns_iface", ifaceList, "domain", cfg.Domain, "max_links", cfg.MaxLinks,
		"mem_limit", memLimit, "peers", len(cfg.Peers))
}

// printBanner tells a person who just started a node who it is and how to
// link a second node to it, with a command line that can be pasted as it
// is: bin is the path of this binary, and the second data dir is a real
// one beside this node's.
func printBanner(w io.Writer, d *daemon.Daemon, cfg config.Config, bin string) {
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
	mdns := ""
	if !cfg.MDNS {
		mdns = " --mdns=false" // as this node runs (tests and make run keep mDNS off)
	}
	fmt.Fprintf(w, "  %s node --data %s --listen %s --peer %s#%s%s\n",
		shellQuote(bin), shellQuote(secondDataDir(cfg.DataDir)), suggestListen(host, port), addr, fp, mdns)
	fmt.Fprintf(w, "Check links: %s status --control %s\n", shellQuote(bin), shellQuote(cfg.Control))
}

// executablePath is the path this binary was started from, for printed
// command lines; "qpq" when the system cannot say.
func executablePath() string {
	p, err := os.Executable()
	if err != nil {
		return "qpq"
	}
	return p
}

// secondDataDir proposes a data dir for a second node beside dir: the same
// path with "2" appended (./.qpq becomes ./.qpq2).
func secondDataDir(dir string) string {
	c := filepath.Clean(dir)
	if c == "/" || c == "." {
		return filepath.Join(c, "qpq2")
	}
	if !filepath.IsAbs(c) && !strings.HasPrefix(c, ".") {
		c = "./" + c
	}
	return c + "2"
}

// shellQuote quotes s for a POSIX shell when it holds anything but the
// characters paths usually have.
func shellQuote(s string) string {
	if s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-./:@%+=,") == "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
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

const nodeIDAbout = `Print the node's fingerprint and short code. Compare the short code read
aloud with what another node's operator sees before pinning it with --peer.

It reads the identity the node uses and never invents one: when the data dir
holds no node key it says so and exits 1 (check --data: on OpenWrt the keys
live in /etc/qpq). --create makes a new identity there instead, as the
node's first start would.`

func runNodeID(env *cliEnv, args []string) int {
	fs := newFlags(env, "node id", "node id [--data DIR] [--create] [--json] [--qr]", nodeIDAbout)
	b := config.Bind(fs, "data")
	asJSON := fs.Bool("json", false, "print one JSON object with keys fingerprint and short")
	create := fs.Bool("create", false, "create the node identity in the data dir when it has none")
	showQR := fs.Bool("qr", false, "also print the fingerprint as a QR code ("+nodeQRPrefix+"FINGERPRINT)")
	cfg, err := b.Parse(args, env.getenv)
	if code, ok := parseStatus(env, fs, err); !ok {
		return code
	}
	var id *identity.Node
	if *create {
		var created bool
		id, created, err = identity.LoadOrCreateNode(cfg.DataDir)
		if err == nil && created {
			fmt.Fprintf(env.stderr, "created a new node identity in %s\n", cfg.DataDir)
		}
	} else {
		id, err = identity.LoadNode(cfg.DataDir)
		if errors.Is(err, identity.ErrNoNodeIdentity) {
			fmt.Fprintf(env.stderr, "qpq node id: no node identity in %s: is this the node's data dir? Pass the one the node runs with (--data DIR or QPQ_DATA; OpenWrt: --data /etc/qpq), or add --create to make a new identity there\n", cfg.DataDir)
			return exitFailure
		}
	}
	if err != nil {
		fmt.Fprintf(env.stderr, "qpq node id: %v\n", err)
		return exitFailure
	}
	fp := id.Fingerprint()
	if *asJSON {
		if code := writeJSON(env, "node id", idJSON{Fingerprint: fp.String(), Short: fp.Short()}); code != exitOK || !*showQR {
			return code
		}
	} else {
		fmt.Fprintf(env.stdout, "fingerprint  %s\nshort code   %s\n", fp, fp.Short())
	}
	return printNodeQR(env, fp, *showQR)
}
