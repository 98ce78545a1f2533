package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"golang.org/x/term"

	"github.com/quicproquo/qpq/gossip"
	"github.com/quicproquo/qpq/mesh/identity"
	"github.com/quicproquo/qpq/mesh/link"
	"github.com/quicproquo/qpq/node/client"
	"github.com/quicproquo/qpq/node/display"
	"github.com/quicproquo/qpq/node/e2e"
	"github.com/quicproquo/qpq/node/home"
	"github.com/quicproquo/qpq/node/outbox"
)

const recvAbout = `Fetch the messages a node holds for you, print them, and acknowledge
them (which deletes every copy in the mesh). Without --follow it prints what
is there now and exits 0, also when there is nothing; with --follow it keeps
waiting for new messages until interrupted, and when the node goes away
(restarts, the network drops) it says so and reconnects by itself.

Each message is shown once, however many copies reach you: a direct message
is deleted from the node once shown, and the ids shown are remembered in the
home dir. So a second recv (with or without --json) shows nothing of what
the first one printed; use --json from the start to keep a copy.

--node takes one node or several, comma separated (ADDR[#FP],ADDR[#FP]);
with --follow the nodes remembered in the home dir come after them. After
three failed attempts on a node, --follow moves to the next one and opens
your mailbox there (every node holds your messages), still showing each
message once. Without --node or QPQ_NODE, recv looks for nodes by mDNS on
this machine's links and uses the lowest RTT, trusted ones first; a node
never used before is asked about on a terminal and refused otherwise,
unless --trust-new (anyone on the network can announce a node). With no
node given and none found it exits 2.

It also shows the messages of the channels you joined (qpq channel), which
stay at the nodes for late joiners and are never acknowledged.

Text from senders is shown safely: control characters, escape sequences
and invisible or reordering Unicode are shown escaped (\x1b, \u202e), and
the further lines of a message are indented under its header, so no message
can make a line that looks like another. A sender who is not one of your
contacts is shown by short code and marked "(not a contact)". Messages from
a sender you blocked (qpq contact block) are not shown, but acknowledged all
the same, so the mesh deletes them.

--json prints one object per line, with the exact text: id, kind ("dm" or
"broadcast"), channel (the local name, broadcasts only), from (the sender's
fingerprint), text, sent_at (RFC 3339, UTC; the sender's clock).

Examples:
  qpq recv --node 127.0.0.1:7443
  QPQ_NODE=127.0.0.1:7443 qpq recv --follow --json
  qpq recv --follow --node 192.168.1.1:7443,192.168.2.1:7443
  qpq recv --trust-new          # a node found by mDNS, even a new one`

// recvJSON is one line of `qpq recv --json`.
type recvJSON struct {
	ID      string `json:"id"`
	Kind    string `json:"kind"`
	Channel string `json:"channel,omitempty"` // the local name, for broadcasts
	From    string `json:"from"`
	Text    string `json:"text"`
	SentAt  string `json:"sent_at"`
}

func runRecv(env *cliEnv, args []string) int {
	fs := newFlags(env, "recv", "recv [--node ADDR[#FP][,ADDR[#FP]...]] [--trust-new] [--home DIR] [--follow [--decoy-rate N]] [--json]", recvAbout)
	nodeFlag := fs.String("node", "", "node(s) to fetch from, ADDR[#FINGERPRINT], comma separated (default: found by mDNS) [$QPQ_NODE]")
	homeDir := fs.String("home", "", "client home dir [$QPQ_HOME]")
	follow := fs.Bool("follow", false, "keep waiting for new messages, reconnecting when the node goes away")
	asJSON := fs.Bool("json", false, "one JSON object per message, with the exact text")
	decoyFlag := fs.String("decoy-rate", "", "with --follow: cover onion packets a second to the node, at random (Poisson) times, as qpq chat sends them (default 0: off) [$QPQ_CLIENT_DECOY_RATE]")
	repin := fs.Bool("repin", false, "accept and remember a changed node key")
	mdnsOn, mdnsErr := mdnsDefault(env)
	mdns := fs.Bool("mdns", mdnsOn, "without --node: look for nodes by mDNS on this machine's links [$QPQ_MDNS]")
	trustNew := fs.Bool("trust-new", false, "without --node: trust a node found by mDNS that was never used (else only a terminal may confirm it)")
	if code, ok := parseStatus(env, fs, fs.Parse(args)); !ok {
		return code
	}
	h, err := home.Resolve(*homeDir, env.getenv)
	if err != nil {
		fmt.Fprintf(env.stderr, "qpq recv: %v\n", err)
		return exitUsage
	}
	if *decoyFlag == "" {
		*decoyFlag = env.getenv("QPQ_CLIENT_DECOY_RATE")
	}
	decoys, err := parseClientDecoyRate(*decoyFlag)
	if err == nil && decoys > 0 && !*follow {
		err = errors.New("needs --follow (cover traffic goes on while recv waits)")
	}
	if err != nil {
		fmt.Fprintf(env.stderr, "qpq recv: --decoy-rate: %v\n", err)
		return exitUsage
	}
	u, err := loadUser(env, h)
	if err != nil {
		fmt.Fprintf(env.stderr, "qpq recv: %v\n", err)
		return exitFailure
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if mdnsErr != nil {
		fmt.Fprintf(env.stderr, "qpq recv: %v\n", mdnsErr)
		return exitUsage
	}
	plan, err := planNodes(ctx, env, h, *nodeFlag, *follow, *trustNew, *mdns)
	if err != nil {
		fmt.Fprintf(env.stderr, "qpq recv: %v\n", err)
		if errors.As(err, new(usageError)) {
			return exitUsage
		}
		return exitFailure
	}
	// The reconnection notices come from the fetch loops' goroutines.
	env2 := *env
	env2.stderr = &lockedWriter{w: env.stderr}
	if err := recv(ctx, &env2, h, u, plan, recvOptions{repin: *repin, follow: *follow, asJSON: *asJSON, decoys: decoys}); err != nil && ctx.Err() == nil {
		// Errors can carry text the node chose.
		fmt.Fprintf(env.stderr, "qpq recv: %s\n", display.Escape(err.Error()))
		return exitFailure
	}
	return exitOK
}

// lockedWriter serialises writes from several goroutines.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// recvOptions are recv's flags.
type recvOptions struct {
	repin, follow, asJSON bool
	decoys                float64 // cover packets a second while following
}

func recv(ctx context.Context, env *cliEnv, h home.Home, u *e2e.User, plan nodePlan, o recvOptions) error {
	repin, follow, asJSON := o.repin, o.follow, o.asJSON
	signed, err := signedBundle(h, u)
	if err != nil {
		return err
	}
	seen, err := h.LoadSeen()
	if err != nil {
		return err
	}
	chans, err := h.Channels()
	if err != nil {
		return err
	}
	// The first connection to a node trusts on first use (or checks the
	// key remembered); every reconnection pins the key it proved. After
	// three failed attempts the session moves to the next node.
	var mu sync.Mutex
	at := plan.cands[0].Addr
	s, err := client.Open(ctx, client.SessionConfig{
		Nodes:      plan.cands,
		Candidates: plan.provider,
		Dial:       plan.dial(env, h, repin),
		Trust:      plan.trust(env, h, "recv"),
		Authenticate: func(ctx context.Context, c *client.Client) (*client.Mailbox, error) {
			return c.Authenticate(ctx, u, signed)
		},
		AttemptTimeout: attemptTimeout(len(plan.cands)),
		// A node that vanished without closing the connection (killed,
		// rebooted) is noticed within 6 s rather than QUIC's idle timeout.
		ProbeInterval: 3 * time.Second,
		ProbeTimeout:  3 * time.Second,
		OnLost: func(err error) {
			mu.Lock()
			defer mu.Unlock()
			fmt.Fprintf(env.stderr, "qpq recv: lost the node at %s (%s); reconnecting...\n", at, display.Escape(err.Error()))
		},
		OnSwitch: func(from, to client.Candidate) {
			mu.Lock()
			defer mu.Unlock()
			at = to.Addr
			fmt.Fprintf(env.stderr, "qpq recv: moved from the node at %s to the node at %s\n", from.Addr, to.Addr)
		},
		OnBack: func() {
			mu.Lock()
			defer mu.Unlock()
			fmt.Fprintf(env.stderr, "qpq recv: reconnected to the node at %s\n", at)
		},
		OnRefused: func(c client.Candidate, err error) {
			fmt.Fprintf(env.stderr, "qpq recv: not using the node at %s: %s\n", c.Addr, display.Escape(err.Error()))
		},
	})
	if err != nil {
		return err
	}
	defer s.Close()
	mu.Lock()
	at = s.State().Node.Addr // Open may have passed over nodes that did not answer
	mu.Unlock()
	ids := make([][32]byte, len(chans))
	for i, ch := range chans {
		ids[i] = ch.Key.ID()
	}
	p := &recvPrinter{env: env, h: h, u: u, chans: chans, seen: seen, asJSON: asJSON, layout: display.Layout{Width: termWidth(env.stdout)}}
	p.keep = openRecvKeeper(env, h, u)
	r := client.NewReader(s, client.ReaderConfig{Channels: ids, CallTimeout: connectTimeout}, p)
	if follow && o.decoys > 0 {
		tr := outbox.OnionTransport(s, outbox.RouteAuto, nil)
		if err := tr.KeepRelays(h.Path(relaysFile), nil); err != nil {
			fmt.Fprintf(env.stderr, "qpq recv: %s (starting without the onion relays learnt before)\n", display.Escape(err.Error()))
		}
		cctx, stop := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() {
			defer close(done)
			tr.RunCover(cctx, o.decoys)
		}()
		defer func() { stop(); <-done }()
	}
	if follow {
		err = r.Follow(ctx)
	} else {
		err = r.Drain(ctx)
	}
	if errors.Is(err, link.ErrFingerprintMismatch) {
		return fmt.Errorf("%w: the node at %s came back with another key; if the operator confirms a new key, run again with --repin", err, s.State().Node.Addr)
	}
	if err == nil && !follow && p.shown == 0 {
		fmt.Fprintln(env.stderr, "qpq recv: no new messages (messages are deleted from the node once shown, so what an earlier recv printed is not shown again)")
	}
	return err
}

// termWidth is w's width in columns when it is a terminal, else 0 (no
// wrapping for pipes and files).
func termWidth(w io.Writer) int {
	f, ok := w.(*os.File)
	if !ok || !term.IsTerminal(int(f.Fd())) {
		return 0
	}
	cols, _, err := term.GetSize(int(f.Fd()))
	if err != nil {
		return 0
	}
	return cols
}

// recvPrinter opens and prints what the reader hands over; ids already
// shown (by this or an earlier recv) are only acknowledged again.
type recvPrinter struct {
	env    *cliEnv
	h      home.Home
	u      *e2e.User
	chans  []home.Channel
	seen   *home.Seen
	asJSON bool
	layout display.Layout
	shown  int
	keep   *recvKeeper // the history (cmd_history.go)
}

func (p *recvPrinter) DM(e gossip.Envelope) ([]byte, error) {
	id := e.ID.String()
	m, err := e2e.OpenDM(p.u, e.Payload)
	if err != nil {
		if !p.seen.Has("bad " + id) {
			fmt.Fprintf(p.env.stderr, "qpq recv: message %s could not be opened, skipped: %s\n", id, display.Escape(err.Error()))
			p.seen.Add("bad " + id)
		}
		return nil, nil
	}
	if !p.seen.Has(id) && !p.h.IsBlocked(m.From) { // blocked: acknowledged unseen
		if err := p.print(recvJSON{ID: id, Kind: "dm", From: m.From.String(), Text: string(m.Body), SentAt: m.SentAt.UTC().Format(time.RFC3339)}, m.From, m.SentAt, ""); err != nil {
			return nil, err
		}
		p.seen.Add(id)
		p.keep.dm(id, m)
	}
	return append([]byte(nil), m.ReceiptSecret[:]...), nil
}

func (p *recvPrinter) Broadcast(i int, e gossip.Envelope) error {
	id := e.ID.String()
	if p.seen.Has(id) || p.seen.Has("bad "+id) {
		return nil
	}
	ch := p.chans[i]
	m, err := e2e.OpenChannel(ch.Key, e.Payload)
	if err != nil {
		fmt.Fprintf(p.env.stderr, "qpq recv: channel message %s in %s could not be opened, skipped: %s\n", id, display.Escape(ch.Name), display.Escape(err.Error()))
		p.seen.Add("bad " + id)
		return nil
	}
	if p.h.IsBlocked(m.From) {
		p.seen.Add(id)
		return nil
	}
	if err := p.print(recvJSON{ID: id, Kind: "broadcast", Channel: ch.Name, From: m.From.String(), Text: string(m.Body), SentAt: m.SentAt.UTC().Format(time.RFC3339)}, m.From, m.SentAt, ch.Name); err != nil {
		return err
	}
	p.keep.broadcast(id, ch, m)
	p.seen.Add(id)
	return nil
}

// Shown persists the ids shown before the batch is acknowledged.
func (p *recvPrinter) Shown() error {
	p.keep.flush() // the history and the gap tracker too
	return p.seen.Save()
}

// print writes one message: the exact text as JSON, or laid out safely.
func (p *recvPrinter) print(j recvJSON, from identity.Fingerprint, sentAt time.Time, channel string) error {
	var err error
	if p.asJSON {
		err = json.NewEncoder(p.env.stdout).Encode(j)
	} else {
		_, err = io.WriteString(p.env.stdout, p.layout.Format(display.Message{
			SentAt: sentAt, Channel: channel, From: p.h.NameOf(from), FromShort: from.Short(), Body: j.Text,
		}))
	}
	if err != nil {
		return fmt.Errorf("print message %s: %w", j.ID, err)
	}
	p.shown++
	return nil
}
