package main

import (
	"fmt"
	"sort"

	"github.com/quicproquo/qpq/node/config"
	"github.com/quicproquo/qpq/node/uci"
)

const configAbout = `Check a uci file (normally /etc/config/qpq) before the service uses it.
Prints one line per problem, FILE:LINE: section.option: problem, and exits 1
when there is any; prints "FILE: ok" and exits 0 otherwise. A valid setting
that will misbehave (a store too small to take a large message from one
source) is printed as "FILE:LINE: section.option: warning: ..." and does not
change the exit status. The init script
runs it before every start, so a bad value leaves the service stopped with
the reason in the log (logread -e qpq).

Example:
  qpq config check /etc/config/qpq`

func runConfig(env *cliEnv, args []string) int {
	fs := newFlags(env, "config", "config check FILE", configAbout)
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
	f, probs, err := uci.ParseFile(path)
	if err != nil {
		fmt.Fprintf(env.stderr, "qpq config check: %v\n", err)
		return exitFailure
	}
	// Syntax problems and value problems together, so one run shows all.
	cfg, valueProbs := config.FromUCI(f)
	probs = append(probs, valueProbs...)
	sort.SliceStable(probs, func(i, j int) bool { return probs[i].Line < probs[j].Line })
	for _, p := range probs {
		fmt.Fprintln(env.stdout, p.Format(path))
	}
	if len(probs) > 0 {
		return exitFailure
	}
	// Warnings describe a valid file that will misbehave: printed, but
	// the service still starts (the init script runs this check).
	warns := config.UCIWarnings(f, cfg)
	for _, p := range warns {
		fmt.Fprintln(env.stdout, p.Format(path))
	}
	if len(warns) > 0 {
		fmt.Fprintf(env.stdout, "%s: ok, with %d warning(s)\n", path, len(warns))
		return exitOK
	}
	fmt.Fprintf(env.stdout, "%s: ok\n", path)
	return exitOK
}
