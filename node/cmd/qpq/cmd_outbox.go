package main

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/quicproquo/qpq/node/client"
	"github.com/quicproquo/qpq/node/display"
	"github.com/quicproquo/qpq/node/e2e"
	"github.com/quicproquo/qpq/node/home"
	"github.com/quicproquo/qpq/node/outbox"
)

const outboxAbout = `List the messages in your outbox (outbox.db in the home dir, encrypted
under your identity key) and where each one is:

  queued     in the outbox, not yet held by any node
  stored     a node holds it (it answered the enqueue)
  delivered  the recipient's client fetched and acknowledged it (not "read")
  expired    its TTL passed without a receipt
  failed     it cannot be sent (the reason follows)

Queued messages go out with the next qpq send, a running qpq chat, or
qpq outbox --send, which sends them now (to --node or $QPQ_NODE) and then
lists the outbox; it exits 1 when some are still queued.
"delivered" comes from receipts that qpq send --wait or qpq chat watched
for; a message stays "stored" when neither was running as it was read.

--json prints one object per line: ref, id (lowercase hex, "" until sealed),
kind ("dm" or "broadcast"), to (fingerprint), to_name, channel, state,
reason, attempts, seq, created, expires, changed (RFC 3339, UTC), text.

Examples:
  qpq outbox
  qpq outbox --send --node 127.0.0.1:7443
  qpq outbox --json`

// outboxJSON is one line of `qpq outbox --json`.
type outboxJSON struct {
	Ref      uint64 `json:"ref"`
	ID       string `json:"id"`
	Kind     string `json:"kind"`
	To       string `json:"to,omitempty"`
	ToName   string `json:"to_name,omitempty"`
	Channel  string `json:"channel,omitempty"`
	State    string `json:"state"`
	Reason   string `json:"reason,omitempty"`
	Attempts int    `json:"attempts"`
	Seq      uint64 `json:"seq"`
	Created  string `json:"created"`
	Expires  string `json:"expires"`
	Changed  string `json:"changed"`
	Text     string `json:"text"`
}

func runOutbox(env *cliEnv, args []string) int {
	fs := newFlags(env, "outbox", "outbox [--home DIR] [--send [--node ADDR[#FP]] [--repin]] [--json]", outboxAbout)
	homeDir := fs.String("home", "", "client home dir [$QPQ_HOME]")
	asJSON := fs.Bool("json", false, "one JSON object per message")
	sendNow := fs.Bool("send", false, "send what is queued now, then list")
	nodeFlag := fs.String("node", "", "with --send: node to hand the messages to, ADDR[#FINGERPRINT] [$QPQ_NODE]")
	repin := fs.Bool("repin", false, "with --send: accept and remember a changed node key")
	if code, ok := parseStatus(env, fs, fs.Parse(args)); !ok {
		return code
	}
	var target nodeTarget
	if *sendNow {
		var err error
		if target, err = parseNode(*nodeFlag, env); err != nil {
			fmt.Fprintf(env.stderr, "qpq outbox: %v\n", err)
			return exitUsage
		}
	}
	h, err := home.Resolve(*homeDir, env.getenv)
	if err != nil {
		fmt.Fprintf(env.stderr, "qpq outbox: %v\n", err)
		return exitUsage
	}
	u, err := loadUser(env, h)
	if err != nil {
		fmt.Fprintf(env.stderr, "qpq outbox: %v\n", err)
		return exitFailure
	}
	ob, err := openOutbox(h, u, nil)
	if err != nil {
		fmt.Fprintf(env.stderr, "qpq outbox: %v\n", err)
		return exitFailure
	}
	code := exitOK
	if *sendNow {
		if left, err := sendOutboxNow(env, h, u, target, *repin, ob); err != nil {
			fmt.Fprintf(env.stderr, "qpq outbox: %s\n", display.Escape(err.Error()))
			code = exitFailure
		} else if left > 0 {
			fmt.Fprintf(env.stderr, "qpq outbox: %d still queued\n", left)
			code = exitFailure
		}
	}
	list, err := ob.List()
	if err != nil {
		fmt.Fprintf(env.stderr, "qpq outbox: %v\n", err)
		return exitFailure
	}
	if *asJSON {
		enc := json.NewEncoder(env.stdout)
		for _, e := range list {
			if err := enc.Encode(entryJSON(e)); err != nil {
				fmt.Fprintf(env.stderr, "qpq outbox: write JSON: %v\n", err)
				return exitFailure
			}
		}
		return code
	}
	if len(list) == 0 {
		fmt.Fprintln(env.stderr, "qpq outbox: the outbox is empty")
	}
	for _, e := range list {
		fmt.Fprintln(env.stdout, outboxLine(h, e))
	}
	return code
}

// sendOutboxNow makes one pass over the queued messages and returns how
// many are still queued.
func sendOutboxNow(env *cliEnv, h home.Home, u *e2e.User, t nodeTarget, repin bool, ob *outbox.Outbox) (int, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*connectTimeout)
	defer cancel()
	plan := nodePlan{cands: []client.Candidate{{Addr: t.addr, Pin: t.pin, Trusted: true, Name: "--node"}}, given: true}
	s, err := openSendSession(ctx, env, h, u, plan, repin, false)
	if err != nil {
		return 0, err
	}
	defer s.Close()
	tr := outbox.OnionTransport(s, outbox.RouteAuto, nil)
	if err := tr.KeepRelays(h.Path(relaysFile), nil); err != nil {
		fmt.Fprintf(env.stderr, "qpq outbox: %v (starting without the onion relays learnt before)\n", err)
	}
	return outbox.NewSender(ob, tr, outbox.SenderConfig{}).Pass(ctx)
}

func entryJSON(e outbox.Entry) outboxJSON {
	j := outboxJSON{
		Ref: e.Ref, Kind: string(e.Kind), ToName: e.ToName, Channel: e.Channel, State: string(e.State),
		Reason: e.Reason, Attempts: e.Attempts, Seq: e.Seq, Text: string(e.Body),
		Created: e.Created.UTC().Format(time.RFC3339), Expires: e.ExpiresAt().UTC().Format(time.RFC3339),
		Changed: e.Changed.UTC().Format(time.RFC3339),
	}
	if e.Sealed() {
		j.ID = e.ID.String()
	}
	if e.Kind == outbox.DM {
		j.To = e.To.String()
	}
	return j
}

// outboxLine is one entry as `qpq outbox` shows it: every text a person
// chose (names, body) escaped, on one line.
func outboxLine(h home.Home, e outbox.Entry) string {
	to := "#" + e.Channel
	if e.Kind == outbox.DM {
		to = h.NameOf(e.To)
		if to == "" {
			to = e.ToName
		}
		if to == "" {
			to = e.To.Short() + " " + display.NotContact
		}
	}
	id := "(not sealed yet)"
	if e.Sealed() {
		id = e.ID.String()[:16]
	}
	body := string(e.Body)
	if r := []rune(body); len(r) > 40 {
		body = string(r[:40]) + "..."
	}
	return display.Escape(fmt.Sprintf("%s  %-9s  to %s  %s  \"%s\"  %s",
		e.Created.Local().Format(display.TimeLayout), e.State, to, id, body, stateNote(e)))
}

// stateLine says an entry's state in words, as `qpq send` prints it.
func stateLine(e outbox.Entry) string {
	return strings.TrimSpace(string(e.State) + " " + stateNote(e))
}

// stateNote explains a state (the same words everywhere).
func stateNote(e outbox.Entry) string {
	switch e.State {
	case outbox.Queued:
		if e.Reason != "" {
			return fmt.Sprintf("(in the outbox, not yet held by a node; %d attempts, last: %s)", e.Attempts, e.Reason)
		}
		return "(in the outbox, not yet held by a node)"
	case outbox.Stored:
		return "(a node holds it)"
	case outbox.Delivered:
		return "(the recipient's client fetched and acknowledged it)"
	case outbox.Expired:
		return "(its TTL passed without a receipt)"
	case outbox.Failed:
		return "(" + e.Reason + ")"
	}
	return ""
}

// openOutbox opens the user's outbox in h; onChange may be nil.
func openOutbox(h home.Home, u *e2e.User, onChange func(outbox.Entry)) (*outbox.Outbox, error) {
	if err := h.Ensure(); err != nil {
		return nil, err
	}
	return outbox.Open(h.Path(outbox.FileName), u, outbox.Config{OnChange: onChange})
}
