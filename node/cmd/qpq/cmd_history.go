package main

import (
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"time"

	"github.com/quicproquo/qpq/mesh/identity"
	"github.com/quicproquo/qpq/node/display"
	"github.com/quicproquo/qpq/node/e2e"
	"github.com/quicproquo/qpq/node/gaps"
	"github.com/quicproquo/qpq/node/history"
	"github.com/quicproquo/qpq/node/home"
	"github.com/quicproquo/qpq/node/outbox"
)

const historyAbout = `Show the messages you received (qpq recv, qpq chat) and sent (qpq send,
qpq chat), oldest first, from the history in the home dir (history.db,
encrypted under your identity key, like the outbox). NAME (a contact,
fingerprint or unique prefix of a contact's) shows only the direct messages
with that person; #CHANNEL only that channel; N only the newest N.

The history keeps at most 1000 messages unless set otherwise, dropping the
oldest first: --keep N sets the bound from now on (0 keeps none and deletes
what is there); $QPQ_HISTORY overrides it for one command.

It also says which messages have not arrived: each sender numbers their
messages per conversation, so when a later one arrives first you read
"1 message from alice not yet arrived", and "missing" once the earlier
one's TTL has passed. (One device per identity for now: a second device
would number its messages on its own.)

Text is shown safely, as qpq recv shows it; --json prints one object per
line with the exact text: id, dir ("in" or "out"), kind ("dm" or
"broadcast"), peer (the other person's fingerprint, DMs), from, channel,
text, sent_at (the sender's clock), at (when received or written; RFC 3339,
UTC), seq.

Examples:
  qpq history
  qpq history alice 20
  qpq history --keep 200
  qpq history --json`

// historyJSON is one line of `qpq history --json`.
type historyJSON struct {
	ID      string `json:"id"`
	Dir     string `json:"dir"`
	Kind    string `json:"kind"`
	Peer    string `json:"peer,omitempty"`
	From    string `json:"from"`
	Channel string `json:"channel,omitempty"`
	Text    string `json:"text"`
	SentAt  string `json:"sent_at"`
	At      string `json:"at"`
	Seq     uint64 `json:"seq"`
}

// gapsState is the history state blob holding the gap tracker.
const gapsState = "gaps"

func runHistory(env *cliEnv, args []string) int {
	fs := newFlags(env, "history", "history [NAME | #CHANNEL] [N] [--keep N] [--home DIR] [--json]", historyAbout)
	homeDir := fs.String("home", "", "client home dir [$QPQ_HOME]")
	asJSON := fs.Bool("json", false, "one JSON object per message, with the exact text")
	keep := fs.String("keep", "", "from now on keep at most N messages (0: none, and delete them)")
	var pos []string
	rest := args
	for {
		if err := fs.Parse(rest); err != nil {
			code, _ := parseStatus(env, fs, err)
			return code
		}
		if fs.NArg() == 0 {
			break
		}
		pos, rest = append(pos, fs.Arg(0)), fs.Args()[1:]
	}
	if len(pos) > 2 {
		fmt.Fprintf(env.stderr, "qpq history: unexpected argument %q\n", pos[2])
		return exitUsage
	}
	h, err := home.Resolve(*homeDir, env.getenv)
	if err != nil {
		fmt.Fprintf(env.stderr, "qpq history: %v\n", err)
		return exitUsage
	}
	if err := requireIdentity(h); err != nil {
		fmt.Fprintf(env.stderr, "qpq history: %v\n", err)
		return exitFailure
	}
	var q history.Query
	for i, p := range pos {
		if n, err := strconv.Atoi(p); err == nil && i == len(pos)-1 {
			if n <= 0 {
				fmt.Fprintf(env.stderr, "qpq history: N %q: want a positive number of messages\n", p)
				return exitUsage
			}
			q.Last = n
			continue
		}
		if i > 0 {
			fmt.Fprintf(env.stderr, "qpq history: unexpected argument %q\n", p)
			return exitUsage
		}
		if len(p) > 1 && p[0] == '#' {
			q.Channel = p[1:]
			continue
		}
		fp, _, err := h.ResolveRecipient(p)
		if err != nil {
			fmt.Fprintf(env.stderr, "qpq history: %v\n", err)
			return exitUsage
		}
		q.Peer = fp
	}
	limit, err := history.LimitFrom(*keep, env.getenv)
	if err != nil {
		fmt.Fprintf(env.stderr, "qpq history: %v\n", err)
		return exitUsage
	}
	u, err := loadUser(env, h)
	if err != nil {
		fmt.Fprintf(env.stderr, "qpq history: %v\n", err)
		return exitFailure
	}
	st, err := openHistory(h, u, limit)
	if err != nil {
		fmt.Fprintf(env.stderr, "qpq history: %v\n", err)
		return exitFailure
	}
	if *keep != "" {
		if err := st.SetLimit(limit); err != nil {
			fmt.Fprintf(env.stderr, "qpq history: %v\n", err)
			return exitFailure
		}
		fmt.Fprintf(env.stderr, "qpq history: keeping at most %d messages from now on\n", limit)
	}
	ms, err := st.List(q)
	if err != nil {
		fmt.Fprintf(env.stderr, "qpq history: %v\n", err)
		return exitFailure
	}
	if *asJSON {
		enc := json.NewEncoder(env.stdout)
		for _, m := range ms {
			if err := enc.Encode(messageJSON(m)); err != nil {
				fmt.Fprintf(env.stderr, "qpq history: write JSON: %v\n", err)
				return exitFailure
			}
		}
	} else {
		lay := display.Layout{Width: termWidth(env.stdout)}
		for _, m := range ms {
			io.WriteString(env.stdout, lay.Format(historyMessage(h, m)))
		}
		if len(ms) == 0 && *keep == "" {
			fmt.Fprintln(env.stderr, "qpq history: no messages")
		}
	}
	// What has not arrived, as the tracker saw it at the last recv.
	tr := loadTracker(st)
	for _, n := range gapSummary(tr, q) {
		fmt.Fprintf(env.stderr, "qpq history: %s\n", n.Text(senderName(h, n.From)))
	}
	return exitOK
}

func messageJSON(m history.Message) historyJSON {
	j := historyJSON{ID: m.ID, Dir: string(m.Dir), Kind: m.Kind, From: m.From.String(), Channel: m.Channel, Text: m.Body,
		SentAt: m.SentAt.UTC().Format(time.RFC3339), At: m.At.UTC().Format(time.RFC3339), Seq: m.Seq}
	if m.Kind == "dm" {
		j.Peer = m.Peer.String()
	}
	return j
}

// historyMessage lays out a history entry as recv shows a message.
func historyMessage(h home.Home, m history.Message) display.Message {
	dm := display.Message{SentAt: m.SentAt, Channel: m.Channel, From: h.NameOf(m.From), FromShort: m.From.Short(), Body: m.Body}
	if m.Dir == history.Out {
		dm.From = "you"
		if m.Kind == "dm" {
			dm.From = "you to " + senderName(h, m.Peer)
		}
	}
	return dm
}

// senderName is a contact's name, else the short code marked as not a
// contact.
func senderName(h home.Home, fp identity.Fingerprint) string {
	if n := h.NameOf(fp); n != "" {
		return display.Escape(n)
	}
	return fp.Short() + " " + display.NotContact
}

// gapSummary is one notice per sender and conversation with messages not
// yet arrived or missing (of q's peer or channel only, when given).
func gapSummary(tr *gaps.Tracker, q history.Query) []gaps.Notice {
	type key struct {
		from identity.Fingerprint
		conv string
	}
	var order []key
	sum := map[key]*gaps.Notice{}
	for _, g := range tr.Gaps() {
		if !q.Peer.IsZero() && (g.Conv != gaps.ConvDM || !g.From.Equal(q.Peer)) {
			continue
		}
		k := key{g.From, g.Conv}
		n := sum[k]
		if n == nil {
			n = &gaps.Notice{From: g.From, Conv: g.Conv, Kind: gaps.KindPending}
			sum[k] = n
			order = append(order, k)
		}
		if g.State == gaps.Missing {
			n.Missing += g.Count()
		} else {
			n.Pending += g.Count()
		}
	}
	out := []gaps.Notice{}
	for _, k := range order {
		out = append(out, *sum[k])
	}
	return out
}

// openHistory opens the user's history with limit (history.UseSetting
// for the saved one).
func openHistory(h home.Home, u *e2e.User, limit int) (*history.Store, error) {
	if err := h.Ensure(); err != nil {
		return nil, err
	}
	return history.Open(h.Path(history.FileName), u, history.Config{Limit: limit})
}

// loadTracker returns the gap tracker saved in st (a fresh one when there
// is none or it cannot be read).
func loadTracker(st *history.Store) *gaps.Tracker {
	tr := gaps.New(gaps.Config{})
	if st == nil {
		return tr
	}
	if b, err := st.State(gapsState); err == nil && b != nil {
		if tr.UnmarshalBinary(b) != nil {
			tr = gaps.New(gaps.Config{})
		}
	}
	return tr
}

// keepSent appends a sent message to the history; a failure is a warning
// (the message itself is in the outbox).
func keepSent(env *cliEnv, h home.Home, u *e2e.User, limit int, e outbox.Entry) {
	if limit == 0 {
		return
	}
	st, err := openHistory(h, u, limit)
	if err == nil {
		m := history.Message{Dir: history.Out, Kind: string(e.Kind), Peer: e.To, From: u.Fingerprint(), Channel: e.Channel,
			Body: string(e.Body), SentAt: e.Created, Seq: e.Seq}
		if e.Sealed() {
			m.ID = e.ID.String()
		}
		err = st.Append(m)
	}
	if err != nil {
		fmt.Fprintf(env.stderr, "qpq: warning: not kept in the history: %v\n", err)
	}
}

// recvKeeper keeps what recv (or the chat) shows in the history and
// follows the senders' sequence numbers, telling what has not arrived. A
// history that cannot be opened is a warning: messages are shown all the
// same.
type recvKeeper struct {
	h       home.Home
	say     func(text string) // a gap notice, already safe to show
	warn    func(err error)
	st      *history.Store // nil: keep nothing
	tr      *gaps.Tracker
	pending []history.Message
	dirty   bool
}

// openRecvKeeper opens the history for recv ($QPQ_HISTORY or the saved
// limit), printing notices and warnings on stderr.
func openRecvKeeper(env *cliEnv, h home.Home, u *e2e.User) *recvKeeper {
	return newKeeper(h, u, env.getenv,
		func(text string) { fmt.Fprintf(env.stderr, "qpq recv: %s\n", text) },
		func(err error) { fmt.Fprintf(env.stderr, "qpq recv: warning: %v\n", err) })
}

// newKeeper opens the history of u in h and says the gaps that turned
// missing since the last run. say gets each gap notice ("1 message from
// alice not yet arrived"), warn each failure to keep something.
func newKeeper(h home.Home, u *e2e.User, getenv func(string) string, say func(string), warn func(error)) *recvKeeper {
	k := &recvKeeper{h: h, say: say, warn: warn}
	limit, err := history.LimitFrom("", getenv)
	if err == nil {
		k.st, err = openHistory(h, u, limit)
	}
	if err != nil {
		k.warn(fmt.Errorf("no history this time: %w", err))
	}
	k.tr = loadTracker(k.st)
	k.notices(k.tr.Check())
	return k
}

// check says the gaps whose time passed (call it now and then, e.g. once
// a minute, in a long-running reader).
func (k *recvKeeper) check() {
	if k != nil {
		k.notices(k.tr.Check())
	}
}

// dm records a DM shown.
func (k *recvKeeper) dm(id string, m e2e.Opened) {
	k.add(history.Message{ID: id, Dir: history.In, Kind: "dm", Peer: m.From, From: m.From, Body: string(m.Body), SentAt: m.SentAt, Seq: m.Seq},
		gaps.MessageOf(m, gaps.ConvDM))
}

// broadcast records a channel message shown.
func (k *recvKeeper) broadcast(id string, ch home.Channel, m e2e.Opened) {
	k.add(history.Message{ID: id, Dir: history.In, Kind: "broadcast", From: m.From, Channel: ch.Name, Body: string(m.Body), SentAt: m.SentAt, Seq: m.Seq},
		gaps.MessageOf(m, gaps.ConvChannel(ch.Key.ID())))
}

func (k *recvKeeper) add(m history.Message, g gaps.Message) {
	if k == nil {
		return
	}
	if k.st != nil && k.st.Limit() > 0 { // nothing kept: nothing to hold until flush
		k.pending = append(k.pending, m)
	}
	k.notices(k.tr.Observe(g).Notices)
	k.dirty = true
}

func (k *recvKeeper) notices(ns []gaps.Notice) {
	for _, n := range ns {
		k.say(n.Text(senderName(k.h, n.From)))
	}
}

// flush writes what was shown since the last flush (called before the
// batch is acknowledged, like the seen ids).
func (k *recvKeeper) flush() {
	if k == nil || k.st == nil {
		return
	}
	if ns := k.tr.Check(); len(ns) > 0 { // gaps whose time passed meanwhile (recv --follow)
		k.notices(ns)
		k.dirty = true
	}
	if !k.dirty {
		return
	}
	err := k.st.Append(k.pending...)
	if err == nil {
		var b []byte
		if b, err = k.tr.MarshalBinary(); err == nil {
			err = k.st.SetState(gapsState, b)
		}
	}
	if err != nil {
		k.warn(fmt.Errorf("not kept in the history: %w", err))
	}
	k.pending, k.dirty = k.pending[:0], false
}
