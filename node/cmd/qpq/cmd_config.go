package main

import (
	"fmt"
	"io"
	"net"
	"sort"
	"strings"

	"github.com/quicproquo/qpq/node/config"
	"github.com/quicproquo/qpq/node/uci"
)

const configAbout = `Check a uci file (normally /etc/config/qpq) before the service uses it.
It reads the file as OpenWrt's uci does (the node reads it the same way with
qpq node --uci). Prints one line per problem, FILE:LINE: section.option:
problem, and exits 1 when there is any; prints "FILE: ok" and exits 0
otherwise. A valid setting that will misbehave (a store too small to take a
large message from one source, an empty value uci ignores) is printed as
"FILE:LINE: section.option: warning: ..." and does not change the exit
status. The init script runs it before every start, so a bad value leaves
the service stopped with the reason in the log (logread -e qpq).

With --shell it prints instead, when there is no problem, the settings the
init script needs as shell assignments (qpq_enabled, qpq_data, qpq_store,
qpq_control, qpq_listen_port, qpq_listen_host, qpq_mdns, qpq_mdns_iface_set,
qpq_zones), each value single-quoted, for eval; problems and warnings then
go to stderr, and with a problem nothing is printed on stdout.

Examples:
  qpq config check /etc/config/qpq
  eval "$(qpq config check --shell /etc/config/qpq)"`

func runConfig(env *cliEnv, args []string) int {
	fs := newFlags(env, "config", "config check [--shell] FILE", configAbout)
	shell := fs.Bool("shell", false, "print the init script's settings as shell assignments (problems and warnings on stderr)")
	if len(args) == 0 || args[0] != "check" {
		if code, ok := parseStatus(env, fs, fs.Parse(args)); !ok {
			return code
		}
		fmt.Fprintln(env.stderr, "qpq config: want `qpq config check FILE`")
		usageHint(env, fs)
		return exitUsage
	}
	if code, ok := parseArgs(env, fs, fs.Parse(args[1:]), 1, "FILE"); !ok {
		return code
	}
	path := fs.Arg(0)
	cfg, f, probs, err := readUCI(path)
	if err != nil {
		fmt.Fprintf(env.stderr, "qpq config check: %v\n", err)
		return exitFailure
	}
	report := env.stdout
	if *shell {
		report = env.stderr // stdout is for eval
	}
	for _, p := range probs {
		fmt.Fprintln(report, p.Format(path))
	}
	if len(probs) > 0 {
		return exitFailure
	}
	// Warnings describe a valid file that will misbehave: printed, but
	// the service still starts (the init script runs this check).
	warns := config.UCIWarnings(f, cfg)
	for _, p := range warns {
		fmt.Fprintln(report, p.Format(path))
	}
	if *shell {
		writeShell(env.stdout, cfg)
		return exitOK
	}
	if len(warns) > 0 {
		fmt.Fprintf(env.stdout, "%s: ok, with %d warning(s)\n", path, len(warns))
		return exitOK
	}
	fmt.Fprintf(env.stdout, "%s: ok\n", path)
	return exitOK
}

// readUCI reads a uci file as `qpq config check` and `qpq node --uci` both
// do: libuci's reading (uci.ParseFile) checked against the option table
// (config.FromUCI). probs holds the syntax and value problems together, in
// line order, so one run shows all. err is only for a file that cannot be
// read.
func readUCI(path string) (config.Config, *uci.File, []uci.Problem, error) {
	f, probs, err := uci.ParseFile(path)
	if err != nil {
		return config.Config{}, nil, nil, err
	}
	cfg, valueProbs := config.FromUCI(f)
	probs = append(probs, valueProbs...)
	sort.SliceStable(probs, func(i, j int) bool { return probs[i].Line < probs[j].Line })
	return cfg, f, probs, nil
}

// writeShell prints what the init script needs from cfg as shell
// assignments, each value single-quoted (shSingleQuote), one a line.
func writeShell(w io.Writer, cfg config.Config) {
	host, port, _ := net.SplitHostPort(cfg.Listen) // FromUCI checked it
	switch host {
	case "::", "0.0.0.0", "*":
		host = ""
	}
	vars := []struct{ name, value string }{
		{"qpq_enabled", boolDigit(cfg.Enabled)},
		{"qpq_data", cfg.DataDir},
		{"qpq_store", cfg.Store},
		{"qpq_control", cfg.Control},
		{"qpq_listen_port", port},
		{"qpq_listen_host", host},
		{"qpq_mdns", boolDigit(cfg.MDNS)},
		{"qpq_mdns_iface_set", boolDigit(len(cfg.MDNSIfaces) > 0)},
		{"qpq_zones", strings.Join(cfg.Zones, " ")},
	}
	for _, v := range vars {
		fmt.Fprintf(w, "%s=%s\n", v.name, shSingleQuote(v.value))
	}
}

func boolDigit(b bool) string {
	if b {
		return "1"
	}
	return "0"
}

// shSingleQuote quotes s for a POSIX shell: inside '...' nothing is
// special but ', which is written as '\”.
func shSingleQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
