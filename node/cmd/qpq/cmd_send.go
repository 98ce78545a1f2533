package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/quicproquo/qpq/gossip"
	"github.com/quicproquo/qpq/mesh/link"
	"github.com/quicproquo/qpq/node/client"
	"github.com/quicproquo/qpq/node/config"
	"github.com/quicproquo/qpq/node/display"
	"github.com/quicproquo/qpq/node/e2e"
	"github.com/quicproquo/qpq/node/history"
	"github.com/quicproquo/qpq/node/home"
	"github.com/quicproquo/qpq/node/outbox"
)

// Message defaults (DESIGN "Broadcast channels" lists them).
const (
	defaultDMHops      = 16
	maxDMHops          = 32
	defaultChannelHops = 3
	maxChannelHops     = 7
)

const sendAbout = `Seal a direct message to one person and hand it to a node, which carries
it hop by hop and holds it until they connect. The message is end-to-end
encrypted (X25519 + ML-KEM-768) to the recipient's published key bundle; the
node sees neither the text nor who sent it.

The message is first written to the outbox in the home dir (outbox.db,
encrypted under your identity key), sealed under the id it keeps for good,
then sent; it prints that id (the same id qpq recv shows) and its delivery
state on standard error: queued (in the outbox), stored (a node holds it),
delivered (the recipient's client fetched and acknowledged it; not "read"),
expired (its TTL passed without a receipt), failed (with the reason). It
exits 0 once a node has stored it. When no node answers, the message stays
queued and exits 1: the next qpq send (or qpq chat) sends it, under the same
id, so it is never shown twice; do not send it again. qpq outbox lists the
outbox.

--wait [DURATION] (default 60s) stays until the recipient's client
acknowledged the message (delivered), printing each state change, and
exits 0 only then; when the duration ends first it exits 1 with the last
state. It keeps retrying an unreachable node meanwhile. Only for --to.

--route says how a DM leaves (default auto, or $QPQ_ROUTE): onion sends it
through three relays the client picks among the nodes it has learnt (not
its own node), each of which sees only the relay before and after it, so
that no node, the first included, can tie the message to the router you
sit at; the last relay stores it in the mesh and replies, and only that
reply makes the message "stored". A route whose reply does not come is
replaced by another. auto does so when at least three relays are known
besides the node and otherwise sends directly, and says which it did;
onion never sends directly (the message stays queued); direct hands it to
the node.

With --channel NAME it posts to a channel instead (TTL 6h and 3 hops by
default, at most 7); every member's qpq recv shows it.

Without --node or $QPQ_NODE it finds a node by mDNS on this machine's
links, trusted nodes first, then the lowest RTT, as qpq recv does. A node
never used before is trusted only with --trust-new, or when you confirm it
on a terminal: anyone on the Wi-Fi can announce a node.

The body comes from --text, else from standard input (at most 16 KiB).
--to takes a contact name, a full fingerprint, or a unique prefix of a
contact's fingerprint. The recipient must have connected to the mesh once
(qpq recv) so that their key bundle is known; it is remembered in the
outbox after the first message, so later ones can be written offline.

Sent messages are kept in the history (qpq history; its size is set with
qpq history --keep N, or $QPQ_HISTORY).

Examples:
  qpq send --node 127.0.0.1:7443 --to bob --text "meet at the water tower"
  qpq send --to bob --wait 2m --text "are you there?"   # node found by mDNS
  echo "status: ok" | QPQ_NODE=127.0.0.1:7443 qpq send --to 4xq7 --ttl 2d --hops 8`

func runSend(env *cliEnv, args []string) int {
	fs := newFlags(env, "send", "send [--node ADDR[#FP][,ADDR[#FP]...]] [--trust-new] [--home DIR] --to WHO | --channel NAME [--ttl DURATION] [--hops N] [--route auto|onion|direct] [--text TEXT] [--wait [DURATION]] [--json]", sendAbout)
	nodeFlag := fs.String("node", "", "node(s) to hand the message to, ADDR[#FINGERPRINT], comma separated (default: found by mDNS) [$QPQ_NODE]")
	mdnsOn, mdnsErr := mdnsDefault(env)
	mdns := fs.Bool("mdns", mdnsOn, "without --node: look for a node by mDNS on this machine's links [$QPQ_MDNS]")
	trustNew := fs.Bool("trust-new", false, "without --node: trust a node found by mDNS that was never used (else only a terminal may confirm it)")
	homeDir := fs.String("home", "", "client home dir [$QPQ_HOME]")
	to := fs.String("to", "", "recipient: contact name, fingerprint, or unique prefix of a contact's fingerprint")
	channel := fs.String("channel", "", "post to this channel (a name from qpq channel list) instead of --to")
	text := fs.String("text", "", "message text (default: read standard input)")
	ttlFlag := fs.String("ttl", "", "how long the mesh keeps trying, e.g. 6h, 2d (default 7d; 6h for --channel)")
	hopsFlag := fs.String("hops", "", fmt.Sprintf("most node-to-node forwards (default %d, at most %d; --channel: default 3, at most 7)", defaultDMHops, maxDMHops))
	repin := fs.Bool("repin", false, "accept and remember a changed node key")
	routeFlag := fs.String("route", "", "how a DM leaves: auto (by onion when 3 relays are known, else directly), onion (only by onion) or direct [$QPQ_ROUTE]")
	asJSON := fs.Bool("json", false, "print {\"id\": ..., \"state\": ...} (with --wait, one object per state change)")
	wait := &waitFlag{}
	fs.Var(wait, "wait", "wait until delivered, at most DURATION (default 60s); exit 0 only when delivered")
	textGiven := false
	if code, ok := parseStatus(env, fs, parseWait(fs, wait, args)); !ok {
		return code
	}
	fs.Visit(func(f *flag.Flag) { textGiven = textGiven || f.Name == "text" })
	if (*to == "") == (*channel == "") {
		fmt.Fprintln(env.stderr, "qpq send: give exactly one of --to and --channel")
		return exitUsage
	}
	ttlDefault, hopsDefault, hopsMax := "7d", defaultDMHops, maxDMHops
	if *channel != "" {
		ttlDefault, hopsDefault, hopsMax = "6h", defaultChannelHops, maxChannelHops
	}
	if *ttlFlag == "" {
		*ttlFlag = ttlDefault
	}
	if *hopsFlag == "" {
		*hopsFlag = strconv.Itoa(hopsDefault)
	}
	if *routeFlag == "" {
		*routeFlag = env.getenv("QPQ_ROUTE")
	}
	rt, err := outbox.ParseRoute(*routeFlag)
	if err != nil {
		fmt.Fprintf(env.stderr, "qpq send: --route: %v\n", err)
		return exitUsage
	}
	if wait.set && *channel != "" {
		fmt.Fprintln(env.stderr, "qpq send: --wait needs --to: channel messages have no receipts, so they are never delivered")
		return exitUsage
	}
	histLimit, err := history.LimitFrom("", env.getenv)
	if err != nil {
		fmt.Fprintf(env.stderr, "qpq send: %v\n", err)
		return exitUsage
	}
	ttl, err := config.ParseDuration(*ttlFlag)
	if err != nil || ttl < time.Second || ttl > 90*24*time.Hour {
		fmt.Fprintf(env.stderr, "qpq send: --ttl %q: want a duration from 1s to 90d, e.g. 6h or 7d\n", *ttlFlag)
		return exitUsage
	}
	hops, err := strconv.Atoi(*hopsFlag)
	if err != nil || hops < 0 || hops > hopsMax {
		fmt.Fprintf(env.stderr, "qpq send: --hops %q: want a whole number from 0 to %d\n", *hopsFlag, hopsMax)
		return exitUsage
	}
	if mdnsErr != nil {
		fmt.Fprintf(env.stderr, "qpq send: %v\n", mdnsErr)
		return exitUsage
	}
	if *nodeFlag == "" && env.getenv("QPQ_NODE") == "" && !*mdns {
		fmt.Fprintf(env.stderr, "qpq send: %v\n", errMDNSOff)
		return exitUsage
	}
	if _, err := planNodes(context.Background(), env, home.Home{}, *nodeFlag, false, false, false); err != nil && (*nodeFlag != "" || env.getenv("QPQ_NODE") != "") {
		fmt.Fprintf(env.stderr, "qpq send: %v\n", err) // a bad --node: said before anything is written
		return exitUsage
	}
	h, err := home.Resolve(*homeDir, env.getenv)
	if err != nil {
		fmt.Fprintf(env.stderr, "qpq send: %v\n", err)
		return exitUsage
	}
	if err := requireIdentity(h); err != nil {
		fmt.Fprintf(env.stderr, "qpq send: %v\n", err)
		return exitFailure
	}
	var toFP [32]byte
	var ch home.Channel
	if *channel != "" {
		if ch, err = h.ChannelByName(*channel); err != nil {
			fmt.Fprintf(env.stderr, "qpq send: --channel: %v\n", err)
			return exitUsage
		}
	} else if toFP, _, err = h.ResolveRecipient(*to); err != nil {
		fmt.Fprintf(env.stderr, "qpq send: --to: %v\n", err)
		if errors.Is(err, home.ErrIdentityChanged) { // refused until accepted: not a usage error
			return exitFailure
		}
		return exitUsage
	}
	body := []byte(*text)
	if !textGiven {
		body, err = io.ReadAll(io.LimitReader(env.stdin, gossip.MaxBody+1))
		if err != nil {
			fmt.Fprintf(env.stderr, "qpq send: read standard input: %v\n", err)
			return exitFailure
		}
	}
	if len(bytes.TrimSpace(body)) == 0 {
		if textGiven {
			fmt.Fprintln(env.stderr, "qpq send: --text is empty: there is nothing to send")
			return exitUsage
		}
		fmt.Fprintln(env.stderr, "qpq send: standard input was empty: there is nothing to send (give --text TEXT or pipe the text in)")
		return exitFailure
	}
	if len(body) > gossip.MaxBody {
		fmt.Fprintf(env.stderr, "qpq send: the message is over %d bytes (16 KiB), the most one message carries; split it\n", gossip.MaxBody)
		return exitFailure
	}
	u, err := loadUser(env, h)
	if err != nil {
		fmt.Fprintf(env.stderr, "qpq send: %v\n", err)
		return exitFailure
	}
	msg := outbox.Message{To: toFP, ToName: h.NameOf(toFP), Body: body, TTL: ttl, Hops: uint8(hops)}
	if *channel != "" {
		msg = outbox.Message{Channel: &ch.Key, ChannelName: ch.Name, Body: body, TTL: ttl, Hops: uint8(hops)}
	}
	// The node is found after the message is in the outbox: with no node
	// reachable it waits there as queued.
	nodes := func(ctx context.Context) (nodePlan, error) {
		return planNodes(ctx, env, h, *nodeFlag, false, *trustNew, *mdns)
	}
	return sendQueued(env, h, u, nodes, *repin, msg, sendOptions{route: rt, wait: wait.d, asJSON: *asJSON, history: histLimit})
}

// relaysFile, in the home dir, keeps the onion relays learnt (route.Cache).
const relaysFile = "relays"

// defaultWait is how long --wait alone waits for delivered.
const defaultWait = 60 * time.Second

// testHookEnv names the test hook: "after-outbox" makes `qpq send` kill
// itself (SIGKILL, like kill -9) right after the message was written to
// the outbox, "after-enqueue" right after a node answered the enqueue and
// before stored was written. For tests only; never set it otherwise.
const testHookEnv = "QPQ_TEST_HOOK"

// waitFlag is --wait with an optional duration: `--wait`, `--wait=2m`,
// or `--wait 2m` (parseWait takes the next argument when it is one).
type waitFlag struct {
	set bool
	d   time.Duration
}

func (w *waitFlag) String() string {
	if w == nil || !w.set {
		return ""
	}
	return w.d.String()
}

func (w *waitFlag) IsBoolFlag() bool { return true }

func (w *waitFlag) Set(v string) error {
	w.set = true
	switch v {
	case "true":
		w.d = defaultWait
		return nil
	case "false":
		w.set, w.d = false, 0
		return nil
	}
	d, err := config.ParseDuration(v)
	if err != nil || d <= 0 {
		return fmt.Errorf("want a duration such as 60s or 5m")
	}
	w.d = d
	return nil
}

// parseWait parses args, letting `--wait DURATION` take its value from
// the next argument.
func parseWait(fs *flag.FlagSet, w *waitFlag, args []string) error {
	if err := fs.Parse(args); err != nil {
		return err
	}
	for w.set && fs.NArg() > 0 {
		d, err := config.ParseDuration(fs.Arg(0))
		if err != nil || d <= 0 {
			return nil // parseStatus names the unexpected argument
		}
		w.d = d
		if err := fs.Parse(fs.Args()[1:]); err != nil {
			return err
		}
	}
	return nil
}

type sendOptions struct {
	route   outbox.Route  // how DMs leave
	wait    time.Duration // 0: do not wait for delivered
	asJSON  bool
	history int // history limit
}

// sendQueued writes msg to the outbox, then sends what the outbox holds
// queued (this message and any left by an earlier run) and reports this
// message's state.
func sendQueued(env *cliEnv, h home.Home, u *e2e.User, nodes func(context.Context) (nodePlan, error), repin bool, msg outbox.Message, o sendOptions) int {
	changes := make(chan outbox.Entry, 64)
	ob, err := openOutbox(h, u, func(e outbox.Entry) {
		select {
		case changes <- e:
		default: // the periodic check below catches up
		}
	})
	if err != nil {
		fmt.Fprintf(env.stderr, "qpq send: %v\n", err)
		return exitFailure
	}
	e, err := ob.Add(msg)
	if err != nil {
		fmt.Fprintf(env.stderr, "qpq send: %v\n", err)
		return exitFailure
	}
	hook := env.getenv(testHookEnv)
	if hook == "after-outbox" {
		killSelf()
	}
	rep := &sendReporter{env: env, asJSON: o.asJSON, verbose: o.wait > 0}
	rep.show(e)

	base, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	limit := 2 * connectTimeout
	if o.wait > 0 {
		limit = o.wait
	}
	ctx, cancel := context.WithTimeout(base, limit)
	defer cancel()

	code := func() int {
		plan, err := nodes(ctx)
		if err != nil {
			rep.unsent = err
			return exitFailure
		}
		s, err := openSendSession(ctx, env, h, u, plan, repin, o.wait > 0)
		if err != nil {
			rep.unsent = err
			return exitFailure
		}
		defer s.Close()
		cfg := outbox.SenderConfig{
			Retry:       2 * time.Second,
			FailUnknown: func(x outbox.Entry) bool { return x.Ref == e.Ref },
		}
		if hook == "after-enqueue" {
			cfg.AfterEnqueue = func(x outbox.Entry) {
				if x.Ref == e.Ref {
					killSelf()
				}
			}
		}
		tr := outbox.OnionTransport(s, o.route, rep.noteRoute)
		if err := tr.KeepRelays(h.Path(relaysFile), nil); err != nil {
			fmt.Fprintf(env.stderr, "qpq send: %v (starting without the relays learnt before)\n", err)
		}
		snd := outbox.NewSender(ob, tr, cfg)
		if o.wait == 0 {
			if _, err := snd.Pass(ctx); err != nil {
				rep.unsent = err
			}
			return exitOK
		}
		return waitDelivered(ctx, ob, s, snd, e.Ref, changes, rep)
	}()
	if cur, err := ob.Get(e.Ref); err == nil {
		e = cur
	}
	rep.show(e)
	if e.State != outbox.Failed {
		keepSent(env, h, u, o.history, e)
	}
	return rep.finish(e, code, o.wait > 0)
}

// waitDelivered sends and follows receipts until entry ref is delivered
// (exit 0), final otherwise (exit 1), or ctx ends (exit 1).
func waitDelivered(ctx context.Context, ob *outbox.Outbox, s *client.Session, snd *outbox.Sender, ref uint64, changes <-chan outbox.Entry, rep *sendReporter) int {
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() {
		cancel()
		wg.Wait()
	}()
	wg.Add(2)
	go func() {
		defer wg.Done()
		snd.Run(ctx)
	}()
	go func() {
		defer wg.Done()
		client.WatchReceipts(ctx, s, func(tag [32]byte) { ob.MarkDelivered(tag) })
	}()
	// Another process (a chat) may change the entry too: look now and then.
	tick := time.NewTicker(2 * time.Second)
	defer tick.Stop()
	for {
		var e outbox.Entry
		select {
		case <-ctx.Done():
			return exitFailure
		case e = <-changes:
			if e.Ref != ref {
				continue
			}
		case <-tick.C:
			cur, err := ob.Get(ref)
			if err != nil {
				continue
			}
			e = cur
		}
		rep.show(e)
		switch {
		case e.State == outbox.Delivered:
			return exitOK
		case e.State.Final():
			return exitFailure
		}
	}
}

// sendReporter prints an entry's id once known (standard output) and its
// state (standard error): with --wait each state it takes, else the last.
type sendReporter struct {
	env     *cliEnv
	asJSON  bool
	verbose bool // --wait: every state
	idShown bool
	last    outbox.State
	sealed  bool
	unsent  error // why nothing was sent (no node)

	mu        sync.Mutex
	routes    map[gossip.ID]outbox.RouteNote // how the DMs of this pass left
	routeSaid bool
}

// noteRoute keeps how a DM left (this run's message or one queued
// earlier, sent in the same pass).
func (r *sendReporter) noteRoute(n outbox.RouteNote) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.routes == nil {
		r.routes = map[gossip.ID]outbox.RouteNote{}
	}
	if len(r.routes) < 1024 {
		r.routes[n.ID] = n
	}
}

// show prints e when following every state and it changed.
func (r *sendReporter) show(e outbox.Entry) {
	if r.verbose {
		r.printChanged(e)
	}
}

func (r *sendReporter) printChanged(e outbox.Entry) {
	if e.State == r.last && e.Sealed() == r.sealed {
		return
	}
	r.last, r.sealed = e.State, e.Sealed()
	id := ""
	if e.Sealed() {
		id = e.ID.String()
	}
	r.mu.Lock()
	var rn *outbox.RouteNote
	if n, ok := r.routes[e.ID]; ok && e.Sealed() {
		rn = &n
	}
	say := rn != nil && !r.routeSaid && e.State != outbox.Queued
	r.routeSaid = r.routeSaid || say
	r.mu.Unlock()
	if r.asJSON {
		out := sendJSON{ID: id, State: string(e.State), Reason: e.Reason, At: e.Changed.UTC().Format(time.RFC3339)}
		if rn != nil {
			out.Route, out.Relays = "direct", 0
			if rn.Onion {
				out.Route, out.Relays = "onion", len(rn.Relays)
			} else {
				out.RouteNote = rn.Reason
			}
		}
		json.NewEncoder(r.env.stdout).Encode(out)
		return
	}
	if id != "" && !r.idShown {
		fmt.Fprintln(r.env.stdout, id)
		r.idShown = true
	}
	fmt.Fprintf(r.env.stderr, "qpq send: %s\n", display.Escape(stateLine(e)))
	if say {
		fmt.Fprintf(r.env.stderr, "qpq send: %s\n", display.Escape(rn.Text()))
	}
}

// finish prints the last state and returns the exit status: 0 when a
// node stored it (without --wait) or it was delivered (with --wait).
func (r *sendReporter) finish(e outbox.Entry, code int, wait bool) int {
	r.printChanged(e)
	switch {
	case wait && e.State == outbox.Delivered:
		return exitOK
	case !wait && (e.State == outbox.Stored || e.State == outbox.Delivered) && code == exitOK:
		return exitOK
	}
	switch e.State {
	case outbox.Queued:
		why := e.Reason
		if r.unsent != nil {
			why = r.unsent.Error()
		}
		if why == "" {
			why = "no node answered in time"
		}
		fmt.Fprintf(r.env.stderr, "qpq send: %s\n", display.Escape(fmt.Sprintf(
			"not sent yet (%s); it stays queued in the outbox and goes out with the next qpq send or qpq chat, under the same id: do not send it again", why)))
	case outbox.Stored:
		fmt.Fprintln(r.env.stderr, "qpq send: not delivered yet (the recipient's client has not acknowledged it); the last state is stored (the mesh holds it)")
	}
	return exitFailure
}

// killSelf ends the process as kill -9 would (the test hook).
func killSelf() {
	syscall.Kill(os.Getpid(), syscall.SIGKILL)
	select {} // the signal arrives
}

// openSendSession opens the user's session to the node: once, or with
// retry until ctx ends (waiting for a node that is down).
func openSendSession(ctx context.Context, env *cliEnv, h home.Home, u *e2e.User, plan nodePlan, repin, retry bool) (*client.Session, error) {
	signed, err := signedBundle(h, u)
	if err != nil {
		return nil, err
	}
	// The first connection to a node trusts on first use (or checks the
	// key remembered); every reconnection pins the key it proved.
	cfg := client.SessionConfig{
		Nodes:      plan.cands,
		Candidates: plan.provider,
		Dial:       plan.dial(env, h, repin),
		Trust:      plan.trust(env, h, "send"),
		Authenticate: func(ctx context.Context, c *client.Client) (*client.Mailbox, error) {
			return c.Authenticate(ctx, u, signed)
		},
		AttemptTimeout: attemptTimeout(len(plan.cands)),
		ProbeInterval:  3 * time.Second,
		ProbeTimeout:   3 * time.Second,
	}
	var b client.Backoff
	for {
		s, err := client.Open(ctx, cfg)
		if err == nil {
			return s, nil
		}
		if !retry || errors.Is(err, link.ErrFingerprintMismatch) || errors.Is(err, home.ErrNodeChanged) {
			return nil, err
		}
		tm := time.NewTimer(b.Next())
		select {
		case <-ctx.Done():
			tm.Stop()
			return nil, err
		case <-tm.C:
		}
	}
}
