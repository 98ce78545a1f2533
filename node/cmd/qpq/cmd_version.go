package main

import (
	"fmt"

	"github.com/quicproquo/qpq/node/buildinfo"
)

func runVersion(env *cliEnv, args []string) int {
	fs := newFlags(env, "version", "version", "Print the version, the Go version and os/arch.")
	if code, ok := parseStatus(env, fs, fs.Parse(args)); !ok {
		return code
	}
	fmt.Fprintln(env.stdout, buildinfo.String())
	return exitOK
}
