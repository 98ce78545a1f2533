package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"golang.org/x/term"

	"github.com/quicproquo/qpq/node/chat"
	"github.com/quicproquo/qpq/node/display"
	"github.com/quicproquo/qpq/node/home"
	"github.com/quicproquo/qpq/node/outbox"
)

const chatAbout = `Chat with your contacts and channels: a line-oriented prompt that works in
any terminal (also over ssh to a router). Type a line to send it to the
current conversation (/to NAME picks it); incoming messages are printed
above the prompt without disturbing what you are typing. /help lists the
commands: /dm, /to, /contacts, /channels, /history, /status, /verify,
/block, /unblock, /mesh peers|server|auto|dm|broadcast, /quit.

Each message you send is first written to the outbox in the home dir, then
sent, and shows its delivery state as it changes: queued (in the outbox: no
node has it yet), stored (a node holds it), delivered (the recipient's
client fetched and acknowledged it; not "read"; a sender the recipient
blocked sees delivered too), expired (its TTL passed), failed (with the
reason). The chat starts even when no node answers: messages typed then
wait as queued and go out when a node is back.

--node takes one node or several, comma separated (ADDR[#FP],ADDR[#FP]);
the nodes remembered in the home dir come after them. A lost node is
redialled with backoff; after three failed attempts the chat moves to the
next node and opens your mailbox there, showing nothing twice. Without
--node or QPQ_NODE it looks for nodes by mDNS on this machine's links and
uses the lowest RTT, trusted ones first; a node never used before is shown
and used only once you confirm it with /mesh server ADDR#FP (or with
--trust-new: anyone on the network can announce a node).

Text from senders is shown safely, as qpq recv shows it; a sender who is
not a contact is marked "(not a contact)"; blocked senders are not shown
(still acknowledged). A contact whose identity changed gets nothing until
you compare and accept the new safety number with /verify NAME.

One device per identity for now: a second device with the same identity
would number its messages on its own.

--json turns the chat into a line protocol for other front ends: one JSON
object per event on standard output, commands (the same lines a person
types) on standard input, with the exact text.

Examples:
  qpq chat --node 127.0.0.1:7443
  QPQ_NODE=192.168.1.1:7443,192.168.2.1:7443 qpq chat
  qpq chat --json --node 127.0.0.1:7443 < commands`

func runChat(env *cliEnv, args []string) int {
	fs := newFlags(env, "chat", "chat [--home DIR] [--node ADDR[#FP][,ADDR[#FP]...]] [--route auto|onion|direct] [--json] [--mdns] [--trust-new]", chatAbout)
	nodeFlag := fs.String("node", "", "node(s) to use, ADDR[#FINGERPRINT], comma separated (default: found by mDNS) [$QPQ_NODE]")
	homeDir := fs.String("home", "", "client home dir [$QPQ_HOME]")
	asJSON := fs.Bool("json", false, "line protocol: one JSON object per event on stdout, commands on stdin")
	mdnsOn, mdnsErr := mdnsDefault(env)
	mdns := fs.Bool("mdns", mdnsOn, "without --node: look for nodes by mDNS on this machine's links [$QPQ_MDNS]")
	trustNew := fs.Bool("trust-new", false, "use a node found by mDNS that was never used without asking (else /mesh server ADDR#FP confirms it)")
	routeFlag := fs.String("route", "", "how DMs leave: auto (by onion when 3 relays are known), onion or direct; /route changes it [$QPQ_ROUTE]")
	decoyFlag := fs.String("decoy-rate", "", "cover onion packets a second to the node, at random (Poisson) times; DMs by onion take their place (default 0: off) [$QPQ_CLIENT_DECOY_RATE]")
	if code, ok := parseStatus(env, fs, fs.Parse(args)); !ok {
		return code
	}
	if *routeFlag == "" {
		*routeFlag = env.getenv("QPQ_ROUTE")
	}
	if _, err := outbox.ParseRoute(*routeFlag); err != nil {
		fmt.Fprintf(env.stderr, "qpq chat: --route: %v\n", err)
		return exitUsage
	}
	if *decoyFlag == "" {
		*decoyFlag = env.getenv("QPQ_CLIENT_DECOY_RATE")
	}
	decoys, err := parseClientDecoyRate(*decoyFlag)
	if err != nil {
		fmt.Fprintf(env.stderr, "qpq chat: --decoy-rate: %v\n", err)
		return exitUsage
	}
	if mdnsErr != nil {
		fmt.Fprintf(env.stderr, "qpq chat: %v\n", mdnsErr)
		return exitUsage
	}
	h, err := home.Resolve(*homeDir, env.getenv)
	if err != nil {
		fmt.Fprintf(env.stderr, "qpq chat: %v\n", err)
		return exitUsage
	}
	// The passphrase is asked before the prompt takes over the terminal.
	u, err := loadUser(env, h)
	if err != nil {
		fmt.Fprintf(env.stderr, "qpq chat: %v\n", err)
		return exitFailure
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	plan, err := planNodes(ctx, env, h, *nodeFlag, true, *trustNew, *mdns)
	if err != nil {
		fmt.Fprintf(env.stderr, "qpq chat: %v\n", err)
		if errors.As(err, new(usageError)) {
			return exitUsage
		}
		return exitFailure
	}
	b, err := newChatBackend(env, h, u, plan, *mdns)
	if err != nil {
		fmt.Fprintf(env.stderr, "qpq chat: %s\n", display.Escape(err.Error()))
		return exitFailure
	}
	defer b.Close()
	if _, _, err := b.Route(*routeFlag); err != nil {
		fmt.Fprintf(env.stderr, "qpq chat: --route: %v\n", err)
		return exitUsage
	}
	b.Cover(decoys)
	if err := runChatREPL(ctx, env, b, *asJSON); err != nil && ctx.Err() == nil {
		fmt.Fprintf(env.stderr, "qpq chat: %s\n", display.Escape(err.Error()))
		return exitFailure
	}
	return exitOK
}

// runChatREPL runs the REPL of node/chat over b until /quit or ctx ends:
// the line editor when stdin and stdout are a terminal, plain lines
// otherwise, the line protocol with --json.
func runChatREPL(ctx context.Context, env *cliEnv, b *chatBackend, asJSON bool) error {
	cfg := chat.Config{In: env.stdin, Out: env.stdout, JSON: asJSON}
	in, inOK := env.stdin.(*os.File)
	out, outOK := env.stdout.(*os.File)
	if inOK && outOK && term.IsTerminal(int(in.Fd())) && term.IsTerminal(int(out.Fd())) {
		fd := int(in.Fd())
		cfg.Terminal = true
		cfg.Width = func() int { return termWidth(out) }
		cfg.Raw = func() (func() error, error) {
			st, err := term.MakeRaw(fd)
			if err != nil {
				return nil, err
			}
			return func() error { return term.Restore(fd, st) }, nil
		}
	}
	return chat.Run(ctx, b, cfg)
}
