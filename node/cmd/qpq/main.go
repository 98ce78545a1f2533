// Command qpq is the quicproquo mesh node and its client: one binary for
// the router daemon (`qpq node`), its status, and (in later steps) the
// chat, send and receive commands.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/quicproquo/qpq/node/config"
)

// Exit statuses (DESIGN's "Names and defaults").
const (
	exitOK      = 0
	exitFailure = 1
	exitUsage   = 2
)

// command is one `qpq NAME` subcommand.
type command struct {
	name     string
	synopsis string // one line for `qpq help`
	run      func(env *cliEnv, args []string) int
}

// cliEnv is the process boundary, injectable for tests.
type cliEnv struct {
	stdout, stderr io.Writer
	stdin          io.Reader
	getenv         func(string) string
	lookupEnv      func(string) (string, bool)
}

func commands() []command {
	return []command{
		{"chat", "chat with your contacts and channels: qpq chat [--node ADDR[#FP]] [--json]", runChat},
		{"node", "run the mesh node daemon (`qpq node id` prints its identity)", runNode},
		{"status", "show a running node's fingerprint, address, uptime and links", runStatus},
		{"id", "create or show your user identity: qpq id new | qpq id show [--qr]", runID},
		{"contact", "contacts and safety numbers: qpq contact add FP [NAME] | list | verify NAME | block NAME", runContact},
		{"channel", "broadcast channels: qpq channel new NAME | join SHARE | list", runChannel},
		{"send", "send a direct or channel message: qpq send --to WHO | --channel NAME --text TEXT", runSend},
		{"recv", "receive your messages: qpq recv [--follow] [--json]", runRecv},
		{"outbox", "list your outbox and each message's delivery state: qpq outbox [--json]", runOutbox},
		{"history", "show the messages you received and sent: qpq history [NAME] [N] [--json]", runHistory},
		{"config", "check a uci config file: qpq config check /etc/config/qpq", runConfig},
		{"selftest", "start two nodes in-process on loopback, link them, exercise every path", runSelftest},
		{"version", "print the version, Go version and os/arch", runVersion},
		{"help", "explain a command: qpq help COMMAND", runHelp},
	}
}

func main() {
	env := &cliEnv{stdout: os.Stdout, stderr: os.Stderr, stdin: os.Stdin, getenv: os.Getenv, lookupEnv: os.LookupEnv}
	os.Exit(run(env, os.Args[1:]))
}

func run(env *cliEnv, args []string) int {
	if len(args) == 0 {
		printOverview(env.stderr)
		return exitUsage
	}
	name := args[0]
	switch name {
	case "-h", "--help", "-help":
		printOverview(env.stdout)
		return exitOK
	case "-version", "--version":
		return runVersion(env, nil)
	}
	for _, c := range commands() {
		if c.name == name {
			return c.run(env, args[1:])
		}
	}
	fmt.Fprintf(env.stderr, "qpq: unknown command %q\n\n", name)
	printOverview(env.stderr)
	return exitUsage
}

func printOverview(w io.Writer) {
	fmt.Fprintln(w, "qpq: end-to-end encrypted messaging over community mesh networks.")
	fmt.Fprintln(w, "\nUsage: qpq COMMAND [flags]\n\nCommands:")
	for _, c := range commands() {
		fmt.Fprintf(w, "  %-8s %s\n", c.name, c.synopsis)
	}
	fmt.Fprintln(w, "\nRun `qpq COMMAND -h` (or `qpq help COMMAND`) for a command's flags.")
}

func runHelp(env *cliEnv, args []string) int {
	if len(args) == 0 || strings.HasPrefix(args[0], "-") {
		printOverview(env.stdout)
		return exitOK
	}
	for _, c := range commands() {
		if c.name == args[0] {
			return c.run(env, append(args[1:], "-h"))
		}
	}
	fmt.Fprintf(env.stderr, "qpq help: unknown command %q\n", args[0])
	return exitUsage
}

// newFlags returns a flag set whose -h prints the full usage to stdout and
// whose errors print one line naming the flag plus a pointer to -h.
func newFlags(env *cliEnv, name, usage, about string) *flag.FlagSet {
	fs := flag.NewFlagSet("qpq "+name, flag.ContinueOnError)
	fs.SetOutput(env.stderr)
	// The flag package calls Usage for -h as well as for errors, so it
	// prints nothing: parseStatus prints the full usage for -h and
	// usageHint the pointer to it after an error.
	fs.Usage = func() {}
	usages[fs] = func(w io.Writer) {
		fmt.Fprintf(w, "Usage: qpq %s\n\n%s\n", usage, strings.TrimSpace(about))
		printFlags(w, fs)
	}
	return fs
}

// usages holds each flag set's full help; a flag set lives for one command run.
var usages = map[*flag.FlagSet]func(io.Writer){}

// printFlags lists flags as people type them: --name ARG.
func printFlags(w io.Writer, fs *flag.FlagSet) {
	first := true
	fs.VisitAll(func(f *flag.Flag) {
		if first {
			fmt.Fprintln(w, "\nFlags:")
			first = false
		}
		arg, usage := flag.UnquoteUsage(f)
		if o, ok := config.Lookup(f.Name); ok {
			arg = o.Arg
		}
		if bf, ok := f.Value.(interface{ IsBoolFlag() bool }); ok && bf.IsBoolFlag() {
			arg = ""
		}
		head := "  --" + f.Name
		if len(f.Name) == 1 {
			head = "  -" + f.Name // one-letter flags are typed -v
		}
		if arg != "" {
			head += " " + arg
		}
		fmt.Fprintf(w, "%s\n      %s\n", head, usage)
	})
}

// parseInterleaved parses flags that may come before, between or after
// positional arguments (people type `qpq contact add FP bob --home DIR`),
// and returns the positional ones.
func parseInterleaved(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		if fs.NArg() == 0 {
			return pos, nil
		}
		pos = append(pos, fs.Arg(0))
		args = fs.Args()[1:]
	}
}

// parseArgs is parseStatus for a command that takes exactly n
// positional arguments, named in the error.
func parseArgs(env *cliEnv, fs *flag.FlagSet, err error, n int, names string) (int, bool) {
	if err != nil {
		return parseStatus(env, fs, err)
	}
	if fs.NArg() != n {
		fmt.Fprintf(env.stderr, "%s: want %s, got %d arguments\n", fs.Name(), names, fs.NArg())
		usageHint(env, fs)
		return exitUsage, false
	}
	return exitOK, true
}

// parseStatus maps a parse error to an exit status; ok is false when the
// command should return it now. -h prints usage to stdout and exits 0.
func parseStatus(env *cliEnv, fs *flag.FlagSet, err error) (int, bool) {
	if err == nil {
		if fs.NArg() > 0 {
			fmt.Fprintf(env.stderr, "%s: unexpected argument %q\n", fs.Name(), fs.Arg(0))
			return exitUsage, false
		}
		return exitOK, true
	}
	if errors.Is(err, flag.ErrHelp) {
		usages[fs](env.stdout)
		return exitOK, false
	}
	var oe *config.OptionError
	if errors.As(err, &oe) {
		fmt.Fprintf(env.stderr, "%s: %v\n", fs.Name(), err)
	}
	// Otherwise the flag package has already printed its own error naming
	// the flag.
	usageHint(env, fs)
	return exitUsage, false
}

// usageHint points from an error to the command's full usage.
func usageHint(env *cliEnv, fs *flag.FlagSet) {
	fmt.Fprintf(env.stderr, "Run '%s -h' for usage.\n", fs.Name())
}
