package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/quicproquo/qpq/gossip"
	"github.com/quicproquo/qpq/mesh/identity"
	"github.com/quicproquo/qpq/mesh/link"
	"github.com/quicproquo/qpq/node/chat"
	"github.com/quicproquo/qpq/node/client"
	"github.com/quicproquo/qpq/node/client/find"
	"github.com/quicproquo/qpq/node/display"
	"github.com/quicproquo/qpq/node/e2e"
	"github.com/quicproquo/qpq/node/history"
	"github.com/quicproquo/qpq/node/home"
	"github.com/quicproquo/qpq/node/outbox"
	"github.com/quicproquo/qpq/node/safety"
)

// chatEventBuffer bounds the events waiting for the REPL. A REPL that
// falls behind loses events (counted, then told in one notice) rather
// than making the network loops wait or the buffer grow.
const chatEventBuffer = 256

// chatLinkPoll is how often the link state is compared with the last one
// shown (the session's callbacks cover the big changes at once; this
// catches attempts failing and the node being tried).
const chatLinkPoll = 500 * time.Millisecond

// Delivery defaults of messages typed in the chat (as qpq send's).
const (
	chatDMTTL      = 7 * 24 * time.Hour
	chatChannelTTL = 6 * time.Hour
)

// chatBackend is chat.Backend over the user's home dir: one session to
// the nodes (reconnecting, failing over), the outbox and its Sender, the
// receipts watch, the mailbox and channel reader, and the history.
type chatBackend struct {
	env      *cliEnv // stderr turned into notices (never the terminal)
	h        home.Home
	u        *e2e.User
	plan     nodePlan
	mdns     bool
	hook     string // QPQ_TEST_HOOK
	histEnv  func(string) string
	ob       *outbox.Outbox
	s        *client.Session
	mgr      *find.Manager
	snd      *outbox.Sender
	route    outbox.Route            // how DMs leave at start (--route)
	routes   *outbox.RoutedTransport // the sender's transport; /route changes its mode
	events   chan chat.Event
	kick     chan struct{} // the link watcher looks now
	ctx      context.Context
	cancel   context.CancelFunc
	wg       sync.WaitGroup
	closeOne sync.Once

	mu       sync.Mutex              // guards the fields below
	stopping bool                    // Close began: no new goroutines
	closed   bool                    // events is closed
	dropped  int                     // events lost since the last notice about it
	kept     map[uint64]bool         // outbox refs already in the history
	shown    map[uint64]deliveryMark // outbox refs: the state last shown
	asked    map[string]bool         // new nodes (ADDR#FP) the person was told about
	choices  int                     // raised by each /mesh server and /mesh auto
	lastLink chat.Link
}

// newChatBackend starts everything: the session connects in the
// background (the chat works, queuing, with no node reachable).
func newChatBackend(env *cliEnv, h home.Home, u *e2e.User, plan nodePlan, mdns bool) (*chatBackend, error) {
	b := &chatBackend{
		h: h, u: u, plan: plan, mdns: mdns, hook: env.getenv(testHookEnv), histEnv: env.getenv,
		events: make(chan chat.Event, chatEventBuffer), kick: make(chan struct{}, 1),
		kept: map[uint64]bool{}, shown: map[uint64]deliveryMark{}, asked: map[string]bool{},
	}
	// What the shared helpers print on stderr (trust on first use...)
	// becomes notices: the terminal belongs to the REPL.
	e := *env
	e.stderr = &noticeWriter{b: b}
	b.env = &e
	ob, err := openOutbox(h, u, b.outboxChanged)
	if err != nil {
		return nil, err
	}
	b.ob = ob
	signed, err := signedBundle(h, u)
	if err != nil {
		return nil, err
	}
	chans, err := h.Channels()
	if err != nil {
		return nil, err
	}
	seen, err := h.LoadSeen()
	if err != nil {
		return nil, err
	}
	b.ctx, b.cancel = context.WithCancel(context.Background())
	s, err := client.Start(b.ctx, client.SessionConfig{
		Nodes:      plan.cands,
		Candidates: plan.provider,
		Dial:       b.dial,
		Trust:      b.trust,
		Authenticate: func(ctx context.Context, c *client.Client) (*client.Mailbox, error) {
			return c.Authenticate(ctx, u, signed)
		},
		AttemptTimeout: attemptTimeout(len(plan.cands)),
		ProbeInterval:  3 * time.Second,
		ProbeTimeout:   3 * time.Second,
		OnLost:         func(error) { b.kickLink() },
		OnBack: func() {
			b.kickLink()
			b.wakeSender()
		},
		OnSwitch: func(from, to client.Candidate) {
			if from.Addr != "" {
				b.notice("info", fmt.Sprintf("moved from the node at %s to the node at %s", display.Escape(from.Addr), display.Escape(to.Addr)))
			}
		},
		OnRefused: func(c client.Candidate, err error) {
			b.notice("warn", fmt.Sprintf("not using the node at %s: %s", display.Escape(c.Addr), display.Escape(err.Error())))
		},
	})
	if err != nil {
		b.cancel()
		return nil, err
	}
	b.s = s
	b.mgr = find.NewManager(s, find.Config{Trusted: h.TrustsNode}, find.AutoConfig{}, 0)
	cfg := outbox.SenderConfig{Retry: 2 * time.Second}
	if b.hook == "after-enqueue" {
		cfg.AfterEnqueue = func(outbox.Entry) { killSelf() }
	}
	b.routes = outbox.OnionTransport(s, b.route, func(n outbox.RouteNote) { b.notice("info", display.Escape(n.Text())) })
	if err := b.routes.KeepRelays(h.Path(relaysFile), nil); err != nil {
		b.notice("warn", display.Escape(err.Error()+" (starting without the onion relays learnt before)"))
	}
	b.snd = outbox.NewSender(ob, b.routes, cfg)

	ids := make([][32]byte, len(chans))
	for i, ch := range chans {
		ids[i] = ch.Key.ID()
	}
	hd := &chatHandler{b: b, chans: chans, seen: seen}
	hd.keep = newKeeper(h, u, env.getenv,
		func(text string) { b.notice("info", text) },
		func(err error) { b.notice("warn", display.Escape(err.Error())) })
	r := client.NewReader(s, client.ReaderConfig{Channels: ids, CallTimeout: connectTimeout}, hd)

	b.lastLink = b.link()
	l := b.lastLink
	b.emit(chat.Event{Kind: chat.EventLink, Link: &l}) // connecting to the first node
	b.run(func(ctx context.Context) { b.snd.Run(ctx) })
	b.run(func(ctx context.Context) {
		client.WatchReceipts(ctx, s, func(tag [32]byte) { b.ob.MarkDelivered(tag) })
	})
	b.run(func(ctx context.Context) {
		// Follow closes the session when it returns.
		if err := r.Follow(ctx); err != nil && ctx.Err() == nil {
			if errors.Is(err, link.ErrFingerprintMismatch) {
				err = fmt.Errorf("%w: a node came back with another key; if its operator confirms a new key, pick it with /mesh server ADDR#FP", err)
			}
			b.notice("warn", "stopped receiving: "+display.Escape(err.Error())+"; restart qpq chat")
			b.kickLink()
		}
	})
	b.run(b.watchLink)
	b.run(hd.watchGaps)
	return b, nil
}

// run starts f on a goroutine that Close stops and waits for.
func (b *chatBackend) run(f func(ctx context.Context)) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.stopping {
		return
	}
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		f(b.ctx)
	}()
}

// emit hands ev to the REPL without ever blocking: when the buffer is
// full the event is dropped and counted, and a notice says so as soon as
// there is room again.
func (b *chatBackend) emit(ev chat.Event) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return
	}
	if b.dropped > 0 {
		n := chat.Event{Kind: chat.EventNotice, Notice: &chat.Notice{Level: "warn", Text: fmt.Sprintf(
			"%d events were not shown (too many at once); /status and /history show where things are", b.dropped)}}
		select {
		case b.events <- n:
			b.dropped = 0
		default:
			b.dropped++
			return
		}
	}
	select {
	case b.events <- ev:
	default:
		b.dropped++
	}
}

// notice emits text for the person, one notice per line (a notice is
// shown as one line); text must be safe to show.
func (b *chatBackend) notice(level, text string) {
	for _, line := range strings.Split(strings.TrimRight(text, "\n"), "\n") {
		b.emit(chat.Event{Kind: chat.EventNotice, Notice: &chat.Notice{Level: level, Text: line}})
	}
}

// noticeWriter turns what the shared helpers write on stderr into
// notices, one per line, escaped.
type noticeWriter struct {
	b   *chatBackend
	mu  sync.Mutex
	buf []byte
}

func (w *noticeWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf = append(w.buf, p...)
	for {
		i := bytes.IndexByte(w.buf, '\n')
		if i < 0 {
			break
		}
		line := strings.TrimPrefix(string(w.buf[:i]), "qpq: ")
		w.buf = w.buf[i+1:]
		if strings.TrimSpace(line) != "" {
			w.b.notice("info", display.Escape(line))
		}
	}
	return len(p), nil
}

// Route implements chat.Backend.
func (b *chatBackend) Route(mode string) (string, int, error) {
	if mode != "" {
		m, err := outbox.ParseRoute(mode)
		if err != nil {
			return "", 0, err
		}
		b.routes.SetMode(m)
	}
	return b.routes.Mode().String(), b.routes.Relays(), nil
}

// maxClientDecoyRate bounds --decoy-rate: each cover packet is 4 KiB to
// the node and a reply back, and 3 relays carry both.
const maxClientDecoyRate = 10

// parseClientDecoyRate reads --decoy-rate: empty is 0 (off).
func parseClientDecoyRate(v string) (float64, error) {
	if v == "" {
		return 0, nil
	}
	r, err := strconv.ParseFloat(v, 64)
	if err != nil || math.IsNaN(r) || r < 0 || r > maxClientDecoyRate {
		return 0, fmt.Errorf("%q: want packets a second between 0 and %d", v, maxClientDecoyRate)
	}
	return r, nil
}

// Cover starts cover traffic to the node at rate packets a second (0:
// none) until the chat closes (outbox.RoutedTransport.RunCover).
func (b *chatBackend) Cover(rate float64) {
	if rate > 0 {
		b.run(func(ctx context.Context) { b.routes.RunCover(ctx, rate) })
	}
}

// Events implements chat.Backend.
func (b *chatBackend) Events() <-chan chat.Event { return b.events }

// Close implements chat.Backend.
func (b *chatBackend) Close() error {
	b.closeOne.Do(func() {
		b.mu.Lock()
		b.stopping = true
		b.mu.Unlock()
		b.cancel()
		b.mgr.Close()
		b.s.Close()
		b.wg.Wait()
		b.mu.Lock()
		b.closed = true
		close(b.events)
		b.mu.Unlock()
	})
	return nil
}

func (b *chatBackend) wakeSender() {
	if b.snd != nil {
		b.snd.Wake()
	}
}

// outboxChanged is the outbox's OnChange: it must not block or call
// back into the outbox.
func (b *chatBackend) outboxChanged(e outbox.Entry) {
	// Each state once: a new entry's queued is what SendDM returns, so
	// only its sealing (the id now known) and later states are events.
	shown := deliveryMark{e.State, e.Sealed()}
	b.mu.Lock()
	last, known := b.shown[e.Ref]
	emit := known && last != shown || !known && e.State != outbox.Queued
	b.shown[e.Ref] = shown
	if e.State.Final() {
		delete(b.shown, e.Ref)
	}
	b.mu.Unlock()
	if emit {
		d := deliveryOf(e)
		b.emit(chat.Event{Kind: chat.EventDelivery, Delivery: &d})
	}
	if e.Sealed() && e.State != outbox.Failed {
		b.mu.Lock()
		keep := !b.kept[e.Ref]
		b.kept[e.Ref] = true
		b.mu.Unlock()
		if keep {
			// Sealed later than written (the recipient's bundle was
			// found): kept now, off the outbox's goroutine.
			b.run(func(context.Context) { keepSent(b.env, b.h, b.u, b.historyLimit(), e) })
		}
	}
}

// deliveryMark is what a delivery event says of an entry.
type deliveryMark struct {
	state  outbox.State
	sealed bool
}

func deliveryOf(e outbox.Entry) chat.Delivery {
	d := chat.Delivery{Ref: e.Ref, To: e.ToName, Text: string(e.Body), State: string(e.State), Changed: e.Changed}
	if e.Sealed() {
		d.ID = e.ID.String()
	}
	if e.Kind == outbox.Broadcast {
		d.To = "#" + e.Channel
	} else if d.To == "" {
		d.To = e.To.Short()
	}
	if e.State == outbox.Failed || e.State == outbox.Queued {
		d.Reason = e.Reason
	}
	return d
}

// historyLimit is $QPQ_HISTORY or the saved setting.
func (b *chatBackend) historyLimit() int {
	n, err := history.LimitFrom("", b.histEnv)
	if err != nil {
		return history.UseSetting
	}
	return n
}

// SendDM implements chat.Backend. The contact is looked up in the
// contacts file now, so a change made while the chat runs (an identity
// change recorded by qpq contact add, a rename) counts.
func (b *chatBackend) SendDM(ctx context.Context, to, text string) (chat.Delivery, error) {
	if err := checkBody(text); err != nil {
		return chat.Delivery{}, err
	}
	fp, name, err := b.h.ResolveRecipient(to)
	if err != nil {
		var ic *home.IdentityChangedError
		if errors.As(err, &ic) {
			n := display.Escape(ic.Name)
			b.notice("warn", identityChangeWarning(b.h, ic))
			return chat.Delivery{}, fmt.Errorf("not sent: the identity of %s changed and was not accepted; compare the safety numbers with /verify %s, then accept with /verify %s ok", n, n, n)
		}
		if errors.Is(err, home.ErrUnknownRecipient) {
			return chat.Delivery{}, fmt.Errorf("no contact called %s (/contacts lists them)", display.Escape(to))
		}
		return chat.Delivery{}, err
	}
	if fp.Equal(b.u.Fingerprint()) {
		return chat.Delivery{}, errors.New("that is you: messages to yourself are not sent")
	}
	if name == "" {
		name = fp.Short()
	}
	return b.add(outbox.Message{To: fp, ToName: name, Body: []byte(text), TTL: chatDMTTL, Hops: defaultDMHops})
}

// SendChannel implements chat.Backend.
func (b *chatBackend) SendChannel(ctx context.Context, channel, text string) (chat.Delivery, error) {
	if err := checkBody(text); err != nil {
		return chat.Delivery{}, err
	}
	ch, err := b.h.ChannelByName(strings.TrimPrefix(channel, "#"))
	if err != nil {
		return chat.Delivery{}, fmt.Errorf("channel %s: %w (/channels lists the channels joined)", display.Escape(channel), err)
	}
	return b.add(outbox.Message{Channel: &ch.Key, ChannelName: ch.Name, Body: []byte(text), TTL: chatChannelTTL, Hops: defaultChannelHops})
}

func checkBody(text string) error {
	if strings.TrimSpace(text) == "" {
		return errors.New("the message is empty: there is nothing to send")
	}
	if len(text) > gossip.MaxBody {
		return fmt.Errorf("the message is over %d bytes (16 KiB), the most one message carries; split it", gossip.MaxBody)
	}
	return nil
}

// add writes m to the outbox (queued), keeps it in the history when its
// envelope is sealed already, and wakes the Sender.
func (b *chatBackend) add(m outbox.Message) (chat.Delivery, error) {
	e, err := b.ob.Add(m)
	if err != nil {
		return chat.Delivery{}, fmt.Errorf("not sent: %w", err)
	}
	if b.hook == "after-outbox" {
		killSelf()
	}
	if e.Sealed() {
		b.mu.Lock()
		keep := !b.kept[e.Ref]
		b.kept[e.Ref] = true
		b.mu.Unlock()
		if keep {
			keepSent(b.env, b.h, b.u, b.historyLimit(), e)
		}
	}
	b.wakeSender()
	return deliveryOf(e), nil
}

// Contacts implements chat.Backend.
func (b *chatBackend) Contacts() ([]chat.Contact, error) {
	cs, err := b.h.Contacts()
	if err != nil {
		return nil, err
	}
	out := make([]chat.Contact, 0, len(cs))
	for _, c := range cs {
		out = append(out, chat.Contact{Name: c.Name, FP: c.Fingerprint.String(), Code: c.Fingerprint.Short(),
			Verified: c.Verified, Blocked: c.Blocked, Changed: c.Changed != nil})
	}
	return out, nil
}

// Channels implements chat.Backend.
func (b *chatBackend) Channels() ([]string, error) {
	chs, err := b.h.Channels()
	if err != nil {
		return nil, err
	}
	out := make([]string, 0, len(chs))
	for _, c := range chs {
		out = append(out, c.Name)
	}
	sort.Strings(out)
	return out, nil
}

// History implements chat.Backend.
func (b *chatBackend) History(name string, n int) ([]chat.Message, error) {
	var q history.Query
	if n > 0 {
		q.Last = n
	}
	switch {
	case strings.HasPrefix(name, "#") && len(name) > 1:
		q.Channel = name[1:]
	case name != "":
		fp, err := b.contactFP(name)
		if err != nil {
			return nil, err
		}
		q.Peer = fp
	}
	st, err := openHistory(b.h, b.u, b.historyLimit())
	if err != nil {
		return nil, err
	}
	ms, err := st.List(q)
	if err != nil {
		return nil, err
	}
	out := make([]chat.Message, 0, len(ms))
	for _, m := range ms {
		out = append(out, b.message(m))
	}
	return out, nil
}

// contactFP finds a conversation's peer: a contact name (also one with
// a pending change: its history is still there), a fingerprint or a
// prefix of a contact's.
func (b *chatBackend) contactFP(name string) (identity.Fingerprint, error) {
	if c, err := b.h.Contact(name); err == nil {
		return c.Fingerprint, nil
	}
	fp, _, err := b.h.ResolveRecipient(name)
	if errors.Is(err, home.ErrUnknownRecipient) {
		return identity.Fingerprint{}, fmt.Errorf("no contact called %s (/contacts lists them)", display.Escape(name))
	}
	return fp, err
}

// message is a history entry as the chat shows it.
func (b *chatBackend) message(m history.Message) chat.Message {
	cm := chat.Message{ID: m.ID, Out: m.Dir == history.Out, Channel: m.Channel, From: b.h.NameOf(m.From),
		FromFP: m.From.String(), FromCode: m.From.Short(), Text: m.Body, SentAt: m.SentAt, At: m.At, Seq: m.Seq}
	if m.Kind == "dm" {
		cm.Peer = b.h.NameOf(m.Peer)
		if cm.Peer == "" {
			cm.Peer = m.Peer.Short()
		}
	}
	return cm
}

// Status implements chat.Backend.
func (b *chatBackend) Status() chat.Status {
	st := chat.Status{Link: b.link(), Outbox: map[string]int{}, User: b.u.Fingerprint().Short()}
	if es, err := b.ob.List(); err == nil {
		for _, e := range es {
			st.Outbox[string(e.State)]++
		}
	}
	st.HistoryLimit = b.historyLimit()
	if st.HistoryLimit == history.UseSetting {
		if hs, err := openHistory(b.h, b.u, history.UseSetting); err == nil {
			st.HistoryLimit = hs.Limit()
		} else {
			st.HistoryLimit = history.DefaultLimit
		}
	}
	return st
}

// link is the session's state as the chat shows it.
func (b *chatBackend) link() chat.Link {
	ls := b.s.State()
	l := chat.Link{State: ls.Word(), Node: ls.Node.Addr, Err: ls.Err, Mode: b.mgr.Mode()}
	if !ls.Node.Pin.IsZero() {
		l.FP = ls.Node.Pin.Short()
	}
	if ls.Up {
		l.Err = ""
	}
	return l
}

func (b *chatBackend) kickLink() {
	select {
	case b.kick <- struct{}{}:
	default:
	}
}

// watchLink emits the link each time its state, node or mode changes.
func (b *chatBackend) watchLink(ctx context.Context) {
	t := time.NewTicker(chatLinkPoll)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-b.kick:
		}
		l := b.link()
		b.mu.Lock()
		last := b.lastLink
		changed := l.State != last.State || l.Node != last.Node || l.Mode != last.Mode
		if changed {
			b.lastLink = l
		}
		b.mu.Unlock()
		if changed {
			b.emit(chat.Event{Kind: chat.EventLink, Link: &l})
		}
	}
}

// Verify implements chat.Backend.
func (b *chatBackend) Verify(name string, confirm bool) (chat.Verification, error) {
	ct, err := b.h.Contact(name)
	if err != nil {
		if errors.Is(err, home.ErrNoContact) {
			return chat.Verification{}, fmt.Errorf("no contact called %s (/contacts lists them)", display.Escape(name))
		}
		return chat.Verification{}, err
	}
	me := b.u.Fingerprint()
	fp := ct.Verifying()
	v := chat.Verification{Name: ct.Name, Number: safety.Number(me, fp), Changed: ct.Changed != nil, Verified: ct.Verified && ct.Changed == nil}
	if ct.Changed != nil {
		v.Old = safety.Number(me, ct.Fingerprint)
	}
	var qr strings.Builder
	if err := printQR(&qr, safety.QR(me, fp)); err == nil {
		v.QR = qr.String()
	}
	if confirm {
		_, accepted, err := b.h.ConfirmVerified(ct.Name)
		if err != nil {
			return v, fmt.Errorf("not recorded: %w", err)
		}
		v.Verified, v.Accepted = true, accepted
		if accepted {
			b.wakeSender()
		}
	}
	return v, nil
}

// SetBlocked implements chat.Backend.
func (b *chatBackend) SetBlocked(name string, blocked bool) error {
	if _, err := b.h.SetBlocked(name, blocked); err != nil {
		if errors.Is(err, home.ErrNoContact) {
			return fmt.Errorf("no contact called %s (/contacts lists them)", display.Escape(name))
		}
		return err
	}
	return nil
}

// errChatMDNSOff is /mesh peers and /mesh auto with mDNS turned off.
var errChatMDNSOff = errors.New("mDNS is off (--mdns=false or QPQ_MDNS=false): there is nothing to browse; pick a node with /mesh server ADDR#FP")

// Peers implements chat.Backend.
func (b *chatBackend) Peers(ctx context.Context) ([]chat.Peer, error) {
	if !b.mdns {
		return nil, errChatMDNSOff
	}
	fctx, cancel := context.WithTimeout(ctx, findTimeout)
	defer cancel()
	ns, cur, err := b.mgr.Peers(fctx)
	if err != nil {
		return nil, fmt.Errorf("browse mDNS: %w", err)
	}
	out := make([]chat.Peer, 0, len(ns))
	for i, n := range ns {
		p := peerOf(n)
		p.Current = i == cur
		out = append(out, p)
	}
	return out, nil
}

func peerOf(n find.Node) chat.Peer {
	p := chat.Peer{Addr: n.Addr, FP: n.FP.String(), Code: n.FP.Short(), Name: "mdns " + n.Iface, RTT: n.RTT, Trusted: n.Trusted}
	if n.Err != nil {
		p.Err = n.Err.Error()
	}
	return p
}

// Server implements chat.Backend. A node never used before must be
// named with its key (ADDR#FP): the person confirms a new node that way.
func (b *chatBackend) Server(ctx context.Context, addr string) (chat.Peer, error) {
	c, err := client.ParseCandidate(addr)
	if err != nil {
		return chat.Peer{}, err
	}
	known, isKnown := b.h.KnownNode(c.Addr)
	switch {
	case c.Pin.IsZero() && isKnown:
		c.Pin = known
	case c.Pin.IsZero():
		dctx, cancel := context.WithTimeout(ctx, connectTimeout)
		cl, err := client.Dial(dctx, c.Addr, identity.Fingerprint{})
		cancel()
		if err != nil {
			return chat.Peer{}, fmt.Errorf("node %s is new to this client and does not answer: %w", c.Addr, err)
		}
		fp := cl.NodeFingerprint()
		cl.Close()
		return chat.Peer{}, fmt.Errorf("node %s is new to this client; it proves the key %s (short %s). If that is the node you mean, confirm it with /mesh server %s#%s",
			c.Addr, fp, fp.Short(), c.Addr, fp)
	}
	if !isKnown || known != c.Pin {
		if err := b.h.RememberNode(c.Addr, c.Pin); err != nil {
			return chat.Peer{}, err
		}
	}
	c.Trusted, c.Name = true, "/mesh server"
	b.mgr.Server(c)
	b.chose()
	b.kickLink()
	p := chat.Peer{Addr: c.Addr, FP: c.Pin.String(), Code: c.Pin.Short(), Name: c.Name, Trusted: true, Current: true}
	rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	if rtt, err := find.RTT(rctx, c.Addr, c.Pin, 1); err == nil {
		p.RTT = rtt
	} else {
		p.Err = err.Error()
	}
	cancel()
	return p, nil
}

// Auto implements chat.Backend.
func (b *chatBackend) Auto(ctx context.Context) (chat.Peer, error) {
	if !b.mdns {
		return chat.Peer{}, errChatMDNSOff
	}
	fctx, cancel := context.WithTimeout(ctx, findTimeout)
	defer cancel()
	n, err := b.mgr.Auto(fctx)
	if err != nil {
		return chat.Peer{}, err
	}
	b.chose()
	b.kickLink()
	p := peerOf(n)
	p.Current = true
	if !n.Trusted {
		p.Err = "new node: not used until you confirm it with /mesh server " + n.Addr + "#" + n.FP.String()
		b.notice("warn", display.Escape(fmt.Sprintf("node %s (%s) is the lowest RTT but new: it is not used until you confirm it with /mesh server %s#%s", n.Addr, n.FP.Short(), n.Addr, n.FP)))
	}
	return p, nil
}

// chose records that the person picked a node, which ends a wait in
// trust.
func (b *chatBackend) chose() {
	b.mu.Lock()
	b.choices++
	b.mu.Unlock()
}

// dial dials a candidate without printing: a trusted one pinned to its
// key or the one remembered for its address (else trusted on first use
// and remembered), an untrusted one pinned to its announced key (trust
// decides).
func (b *chatBackend) dial(ctx context.Context, c client.Candidate) (*client.Client, error) {
	if !c.Trusted {
		cl, err := client.Dial(ctx, c.Addr, c.Pin)
		if err != nil {
			return nil, fmt.Errorf("connect to node %s: %w", c.Addr, err)
		}
		return cl, nil
	}
	pin := c.Pin
	known, isKnown := b.h.KnownNode(c.Addr)
	if pin.IsZero() && isKnown {
		pin = known
	}
	cl, err := client.Dial(ctx, c.Addr, pin)
	if err != nil {
		if errors.Is(err, link.ErrFingerprintMismatch) && c.Pin.IsZero() {
			return nil, fmt.Errorf("%w: node %s no longer proves the key remembered in %s (%v); if its operator confirms a new key, pick it with /mesh server %s#NEWKEY",
				home.ErrNodeChanged, c.Addr, b.h.Path(home.NodesFile), err, c.Addr)
		}
		return nil, fmt.Errorf("connect to node %s: %w", c.Addr, err)
	}
	if fp := cl.NodeFingerprint(); !isKnown || known != fp {
		if !isKnown && c.Pin.IsZero() {
			b.notice("info", fmt.Sprintf("trusting node %s on first use: %s (remembered in %s)", display.Escape(c.Addr), fp.Short(), display.Escape(b.h.Path(home.NodesFile))))
		}
		if err := b.h.RememberNode(c.Addr, fp); err != nil {
			cl.Close()
			return nil, err
		}
	}
	return cl, nil
}

// trust decides about a node found by mDNS that was never used: with
// --trust-new it is taken (and remembered); otherwise the person is told
// how to confirm it, and the attempt waits until another node is chosen
// (/mesh server, /mesh auto) or the chat ends: anyone on the Wi-Fi can
// announce a node, so the mailbox never authenticates to it silently.
func (b *chatBackend) trust(ctx context.Context, c client.Candidate, fp identity.Fingerprint) error {
	if b.plan.trustNew {
		b.notice("info", fmt.Sprintf("trusting node %s found by mDNS on first use (--trust-new): %s", display.Escape(c.Addr), fp.Short()))
		return b.h.RememberNode(c.Addr, fp)
	}
	key := c.Addr + "#" + fp.String()
	b.mu.Lock()
	tell := !b.asked[key]
	b.asked[key] = true
	choices := b.choices
	b.mu.Unlock()
	if tell {
		b.notice("warn", fmt.Sprintf("node %s (%s, %s) was found by mDNS and is new; anyone on this network can announce a node, so it is not used unless you confirm it: /mesh server %s",
			display.Escape(c.Addr), fp.Short(), display.Escape(c.Name), display.Escape(key)))
	}
	t := time.NewTicker(chatLinkPoll)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w: not confirmed", client.ErrNotTrusted)
		case <-t.C:
		}
		if b.h.TrustsNode(fp) {
			return nil // confirmed meanwhile (here or by another qpq)
		}
		b.mu.Lock()
		chosen := b.choices != choices
		b.mu.Unlock()
		if chosen || b.s != nil && b.s.State().Node.Addr != c.Addr {
			// A node was chosen meanwhile (this one, confirmed by its
			// key, or another): the session has made this attempt stale.
			return fmt.Errorf("%w: another choice was made", client.ErrNotTrusted)
		}
	}
}

// chatHandler is the reader's Handler: it opens what arrives and hands
// it to the REPL as events, once (ids shown are remembered in the home
// dir, as qpq recv does), keeping it in the history.
type chatHandler struct {
	b     *chatBackend
	chans []home.Channel
	seen  *home.Seen

	mu   sync.Mutex // the reader and watchGaps take turns with keep
	keep *recvKeeper
}

// chatGapCheck is how often the chat looks whether a message not yet
// arrived is now missing (its TTL passed): in memory, cheap.
const chatGapCheck = time.Second

// watchGaps tells the gaps whose time passed while nothing arrives (the
// reader's batches check too, but a quiet chat has none) and saves the
// tracker when something changed.
func (p *chatHandler) watchGaps(ctx context.Context) {
	t := time.NewTicker(chatGapCheck)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		p.mu.Lock()
		if p.keep != nil && p.keep.st == nil {
			p.keep.check() // no history to save the tracker in
		} else {
			p.keep.flush()
		}
		p.mu.Unlock()
	}
}

func (p *chatHandler) DM(e gossip.Envelope) ([]byte, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	id := e.ID.String()
	m, err := e2e.OpenDM(p.b.u, e.Payload)
	if err != nil {
		if !p.seen.Has("bad " + id) {
			p.b.notice("warn", fmt.Sprintf("message %s could not be opened, skipped: %s", id, display.Escape(err.Error())))
			p.seen.Add("bad " + id)
		}
		return nil, nil
	}
	if !p.seen.Has(id) && !p.b.h.IsBlocked(m.From) { // blocked: acknowledged unseen
		p.show(id, m, "")
		p.seen.Add(id)
		p.keep.dm(id, m)
	}
	return append([]byte(nil), m.ReceiptSecret[:]...), nil
}

func (p *chatHandler) Broadcast(i int, e gossip.Envelope) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	id := e.ID.String()
	if p.seen.Has(id) || p.seen.Has("bad "+id) {
		return nil
	}
	ch := p.chans[i]
	m, err := e2e.OpenChannel(ch.Key, e.Payload)
	if err != nil {
		p.b.notice("warn", fmt.Sprintf("channel message %s in %s could not be opened, skipped: %s", id, display.Escape(ch.Name), display.Escape(err.Error())))
		p.seen.Add("bad " + id)
		return nil
	}
	if !p.b.h.IsBlocked(m.From) {
		p.show(id, m, ch.Name)
		p.keep.broadcast(id, ch, m)
	}
	p.seen.Add(id)
	return nil
}

// Shown persists the history and the ids shown before the batch is
// acknowledged.
func (p *chatHandler) Shown() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.keep.flush()
	return p.seen.Save()
}

func (p *chatHandler) show(id string, m e2e.Opened, channel string) {
	name := p.b.h.NameOf(m.From)
	msg := &chat.Message{ID: id, Channel: channel, From: name, FromFP: m.From.String(), FromCode: m.From.Short(),
		Text: string(m.Body), SentAt: m.SentAt, At: time.Now(), Seq: m.Seq}
	if channel == "" {
		msg.Peer = name
		if name == "" {
			msg.Peer = m.From.Short()
		}
	}
	p.b.emit(chat.Event{Kind: chat.EventMessage, Message: msg})
}
