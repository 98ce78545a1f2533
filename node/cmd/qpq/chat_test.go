package main

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/quicproquo/qpq/mesh/testkit"
	"github.com/quicproquo/qpq/node/chat"
	"github.com/quicproquo/qpq/node/client"
	"github.com/quicproquo/qpq/node/home"
)

// chatEvents collects a backend's events for a test.
type chatEvents struct {
	t  *testing.T
	ch <-chan chat.Event
	// got is every event read so far, in order.
	got []chat.Event
}

// until reads events until ok holds for one of them (or any earlier one).
func (c *chatEvents) until(d time.Duration, what string, ok func(chat.Event) bool) chat.Event {
	c.t.Helper()
	for _, e := range c.got {
		if ok(e) {
			return e
		}
	}
	deadline := time.After(d)
	for {
		select {
		case e, open := <-c.ch:
			if !open {
				c.t.Fatalf("events closed while waiting for %s", what)
			}
			c.got = append(c.got, e)
			if ok(e) {
				return e
			}
		case <-deadline:
			c.t.Fatalf("no %s within %s; events: %s", what, d, eventsText(c.got))
		}
	}
}

func eventsText(es []chat.Event) string {
	var b strings.Builder
	for _, e := range es {
		switch e.Kind {
		case chat.EventMessage:
			b.WriteString("\n  message " + e.Message.Peer + ": " + e.Message.Text)
		case chat.EventDelivery:
			b.WriteString("\n  delivery " + e.Delivery.To + " " + e.Delivery.State + " " + e.Delivery.Reason)
		case chat.EventLink:
			b.WriteString("\n  link " + e.Link.State + " " + e.Link.Node + " " + e.Link.Err)
		case chat.EventNotice:
			b.WriteString("\n  notice " + e.Notice.Level + " " + e.Notice.Text)
		}
	}
	return b.String()
}

// testCLIEnv is the process boundary of an in-process command: no
// terminal, the given variables only.
func testCLIEnv(vars map[string]string) *cliEnv {
	look := func(k string) (string, bool) { v, ok := vars[k]; return v, ok }
	return &cliEnv{stdout: io.Discard, stderr: io.Discard, stdin: strings.NewReader(""),
		getenv: func(k string) string { return vars[k] }, lookupEnv: look}
}

// openTestBackend opens u's chat backend in this process, on nodes.
func openTestBackend(t *testing.T, u user, nodes string) (*chatBackend, *chatEvents) {
	t.Helper()
	env := testCLIEnv(map[string]string{"QPQ_PASSPHRASE": "", "QPQ_MDNS": "false"})
	h := home.Home{Dir: u.home}
	usr, err := loadUser(env, h)
	if err != nil {
		t.Fatal(err)
	}
	plan, err := planNodes(context.Background(), env, h, nodes, true, false, false)
	if err != nil {
		t.Fatal(err)
	}
	b, err := newChatBackend(env, h, usr, plan, false)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b, &chatEvents{t: t, ch: b.Events()}
}

func isState(ref uint64, state string) func(chat.Event) bool {
	return func(e chat.Event) bool {
		return e.Kind == chat.EventDelivery && e.Delivery.Ref == ref && e.Delivery.State == state
	}
}

// TestChatBackend drives the backends of two users directly (no
// terminal): alice on A, bob on C of a line A-B-C. A message to bob goes
// queued, stored, delivered; bob's reply arrives; each is shown once and
// kept in the history; a contact whose identity changed gets nothing;
// Close ends the events and is safe twice.
func TestChatBackend(t *testing.T) {
	ns := linkFixNodes(t, 3)
	alice, bob := newUser(t), newUser(t)
	befriend(t, alice, "alice", bob, "bob")
	a, aev := openTestBackend(t, alice, ns[0].arg())
	b, bev := openTestBackend(t, bob, ns[2].arg())
	aev.until(20*time.Second, "alice connected", func(e chat.Event) bool { return e.Kind == chat.EventLink && e.Link.State == "connected" })
	bev.until(20*time.Second, "bob connected", func(e chat.Event) bool { return e.Kind == chat.EventLink && e.Link.State == "connected" })

	d, err := a.SendDM(context.Background(), "bob", "hello bob")
	if err != nil {
		t.Fatal(err)
	}
	if d.State != "queued" || d.To != "bob" {
		t.Errorf("SendDM returned %+v, want queued to bob", d)
	}
	aev.until(30*time.Second, "stored", isState(d.Ref, "stored"))
	m := bev.until(30*time.Second, "bob's message", func(e chat.Event) bool { return e.Kind == chat.EventMessage }).Message
	if m.Text != "hello bob" || m.From != "alice" || m.Peer != "alice" {
		t.Errorf("bob got %+v", m)
	}
	aev.until(30*time.Second, "delivered", isState(d.Ref, "delivered"))

	r, err := b.SendDM(context.Background(), "alice", "hi alice")
	if err != nil {
		t.Fatal(err)
	}
	aev.until(30*time.Second, "alice's message", func(e chat.Event) bool { return e.Kind == chat.EventMessage && e.Message.Text == "hi alice" })
	bev.until(30*time.Second, "delivered to alice", isState(r.Ref, "delivered"))

	hist, err := a.History("bob", 0)
	if err != nil {
		t.Fatal(err)
	}
	var texts []string
	for _, m := range hist {
		texts = append(texts, map[bool]string{true: "out ", false: "in "}[m.Out]+m.Text)
	}
	if got := strings.Join(texts, "|"); got != "out hello bob|in hi alice" {
		t.Errorf("alice's history with bob: %q", got)
	}
	st := a.Status()
	if st.Link.State != "connected" || st.Link.Node != ns[0].addr || st.Outbox["delivered"] != 1 {
		t.Errorf("alice's status: %+v", st)
	}

	// bob's contacts file changes while the chat runs: an identity
	// change for alice is seen at the next send, and nothing is sent.
	mallory := newUser(t)
	if code, _, _ := runQPQ(t, userEnv, "contact", "add", mallory.fp, "alice", "--home", bob.home); code == 0 {
		t.Fatal("contact add of another identity under alice's name succeeded")
	}
	before := len(b.Status().Outbox)
	if _, err := b.SendDM(context.Background(), "alice", "secret"); err == nil || !strings.Contains(err.Error(), "/verify alice") {
		t.Errorf("send to a changed contact: %v, want a refusal pointing to /verify alice", err)
	}
	if n := b.Status().Outbox; len(n) != before || n["queued"] != 0 {
		t.Errorf("the refused message reached the outbox: %v", n)
	}
	v, err := b.Verify("alice", false)
	if err != nil || !v.Changed || v.Old == "" || v.Number == v.Old {
		t.Errorf("Verify of the changed contact: %+v %v", v, err)
	}

	// Nothing was shown twice.
	n := 0
	for _, e := range bev.got {
		if e.Kind == chat.EventMessage {
			n++
		}
	}
	if n != 1 {
		t.Errorf("bob was shown %d messages, want 1:%s", n, eventsText(bev.got))
	}
	a.Close()
	a.Close()
	testkit.WaitForEvery(t, 10*time.Second, 10*time.Millisecond, "events closed", func() bool {
		select {
		case _, open := <-aev.ch:
			return !open
		default:
			return false
		}
	})
}

// TestChatBackendOffline starts a chat whose only node is down: it comes
// up all the same, a message typed then waits as queued, and goes out
// (stored) by itself once the node is back.
func TestChatBackendOffline(t *testing.T) {
	n := startFixNode(t)
	alice, bob := newUser(t), newUser(t)
	befriend(t, alice, "alice", bob, "bob")
	// bob's bundle reaches the node once; alice's message waits unsealed
	// until the node is back to tell it.
	b, bev := openTestBackend(t, bob, n.arg())
	bev.until(20*time.Second, "bob connected", func(e chat.Event) bool { return e.Kind == chat.EventLink && e.Link.State == "connected" })
	n.kill9()

	a, aev := openTestBackend(t, alice, n.arg())
	d, err := a.SendDM(context.Background(), "bob", "written offline")
	if err != nil {
		t.Fatal(err)
	}
	aev.until(20*time.Second, "alice reconnecting", func(e chat.Event) bool { return e.Kind == chat.EventLink && e.Link.State == "reconnecting" })
	if st := a.Status(); st.Link.State == "connected" || st.Outbox["queued"] != 1 {
		t.Errorf("status with the node down: %+v", st)
	}
	n.restart()
	aev.until(40*time.Second, "stored after the node came back", isState(d.Ref, "stored"))
	m := bev.until(40*time.Second, "bob's message", func(e chat.Event) bool { return e.Kind == chat.EventMessage }).Message
	if m.Text != "written offline" {
		t.Errorf("bob got %q", m.Text)
	}
	aev.until(30*time.Second, "delivered", isState(d.Ref, "delivered"))
	b.Close()
}

// linesWithAll returns the lines of h that contain each of subs.
func linesWithAll(h string, subs ...string) []string {
	var out []string
	for _, l := range strings.Split(h, "\n") {
		all := true
		for _, s := range subs {
			all = all && strings.Contains(l, s)
		}
		if all {
			out = append(out, l)
		}
	}
	return out
}

// after returns what h shows after the last line containing mark (the
// output of the command typed there), "" when mark is not shown.
func after(h, mark string) string {
	i := strings.LastIndex(h, mark)
	if i < 0 {
		return ""
	}
	return h[i+len(mark):]
}

// TestChatTwoUsersInTerminals is what two people see: alice's chat on
// node A and bob's on node C of a line A-B-C, each in a real terminal
// (tmux). Messages go both ways; alice sees hers go queued, stored,
// delivered; a message reaching bob while he is typing is printed above
// his prompt and leaves his half-typed line as it was; /history and
// /status show the conversation and the node. With QPQ_CHAT_CAPTURE set,
// the final screens are written to that file (the README's session).
func TestChatTwoUsersInTerminals(t *testing.T) {
	ns := linkFixNodes(t, 3)
	alice, bob := newUser(t), newUser(t)
	befriend(t, alice, "alice", bob, "bob")
	hostOnly(t, ns[0].addr, ns[2].addr)
	bc := startChatTerm(t, "", []string{"QPQ_MDNS=false"}, "--home", bob.home, "--node", ns[2].arg())
	ac := startChatTerm(t, "", []string{"QPQ_MDNS=false"}, "--home", alice.home, "--node", ns[0].arg())
	bc.waitText(20*time.Second, "connected")
	ac.waitText(20*time.Second, "connected")

	ac.typeLine("/to bob")
	ac.typeLine("hello bob, it's alice")
	bc.waitText(30*time.Second, "hello bob, it's alice")
	h := ac.waitFor(30*time.Second, "alice's message delivered", func(h string) bool {
		return len(linesWithAll(h, "hello bob", "delivered")) > 0
	})
	// The states in the order they were taken.
	q, s, d := strings.Index(h, "queued"), strings.Index(h, "stored"), strings.Index(h, "delivered")
	if q < 0 || s < q || d < s {
		t.Errorf("alice's screen does not show queued, stored, delivered in order (%d %d %d):\n%s", q, s, d, h)
	}

	// bob starts typing; alice's next message arrives meanwhile.
	bc.typeLine("/to alice")
	bc.typeKeys("on my way, see you at the wat")
	bc.waitText(5*time.Second, "see you at the wat")
	ac.typeLine("are you coming?")
	bc.waitText(30*time.Second, "are you coming?")
	scr := bc.screen()
	lines := strings.Split(scr, "\n")
	last := lines[len(lines)-1]
	if !strings.HasSuffix(last, "on my way, see you at the wat") || !strings.Contains(last, ">") {
		t.Errorf("bob's prompt line is %q, want his half-typed line intact:\n%s", last, scr)
	}
	if i := strings.Index(scr, "are you coming?"); i < 0 || i > strings.LastIndex(scr, last) {
		t.Errorf("the incoming message is not above bob's prompt:\n%s", scr)
	}
	bc.typeLine("er tower")
	ac.waitText(30*time.Second, "on my way, see you at the water tower")
	countIn(t, "bob's screen", bc.history(), "are you coming?", 1)
	countIn(t, "alice's screen", ac.history(), "on my way, see you at the water tower", 1)

	writeCapture(t, ac, bc) // the conversation, in case a later step fails
	ac.typeLine("/history bob")
	ac.waitFor(10*time.Second, "/history to show the conversation", func(h string) bool {
		out := after(h, "/history bob")
		return strings.Contains(out, "hello bob, it's alice") && strings.Contains(out, "are you coming?") && strings.Contains(out, "on my way, see you at the water tower")
	})
	ac.typeLine("/status")
	ac.waitFor(10*time.Second, "/status to show the node and the outbox", func(h string) bool {
		out := after(h, "/status")
		return strings.Contains(out, ns[0].addr) && strings.Contains(out, "connected") && strings.Contains(out, "delivered")
	})
	ac.alive()
	bc.alive()
	writeCapture(t, ac, bc)
}

// writeCapture writes alice's and bob's screens to $QPQ_CHAT_CAPTURE,
// when set (the README's chat session is pasted from it).
func writeCapture(t *testing.T, ac, bc *chatTerm) {
	t.Helper()
	p := os.Getenv("QPQ_CHAT_CAPTURE")
	if p == "" {
		return
	}
	out := "alice:\n" + ac.screen() + "\n\nbob:\n" + bc.screen() + "\n"
	if err := os.WriteFile(p, []byte(out), 0o644); err != nil {
		t.Errorf("write the capture: %v", err)
	}
}

// chatJSONLine is one line of `qpq chat --json` (field names matched
// case-insensitively, as encoding/json does).
type chatJSONLine struct {
	Event    string
	ID       string
	OK       bool
	Error    string
	Data     chatJSONFields // a result's data
	Delivery chatJSONFields // a delivery event's state
	Message  chatJSONFields // a message event
	raw      string
}

// chatJSONFields are the fields of the JSON objects the test reads.
type chatJSONFields struct {
	Text, State, To, From string
	Ref                   uint64
}

// TestChatJSONProtocol drives `qpq chat --json` as a script would,
// through pipes: a command line in, the result and the events out, one
// JSON object per line with the exact text.
func TestChatJSONProtocol(t *testing.T) {
	n := startFixNode(t)
	alice, bob := newUser(t), newUser(t)
	befriend(t, alice, "alice", bob, "bob")
	recvAll(t, bob, n.p) // bob's bundle reaches the node
	cmd := exec.Command(qpqBin, "chat", "--json", "--home", alice.home, "--node", n.arg())
	cmd.Env = append(cleanEnv(), append(userEnv, "QPQ_MDNS=false")...)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	stderr := &syncBuf{}
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	lines := make(chan chatJSONLine, 256)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			var l chatJSONLine
			if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
				l.Event = "not JSON: " + err.Error()
			}
			l.raw = sc.Text()
			lines <- l
		}
		close(lines)
		exited <- cmd.Wait()
	}()
	t.Cleanup(func() { cmd.Process.Kill() })
	var seen []string
	next := func(what string, ok func(chatJSONLine) bool) chatJSONLine {
		t.Helper()
		deadline := time.After(30 * time.Second)
		for {
			select {
			case l, open := <-lines:
				if !open {
					t.Fatalf("qpq chat --json ended waiting for %s; it printed:\n%s\nstderr:\n%s", what, strings.Join(seen, "\n"), stderr)
				}
				seen = append(seen, l.raw)
				if strings.HasPrefix(l.Event, "not JSON") {
					t.Errorf("a line that is not JSON: %q (%s)", l.raw, l.Event)
				}
				if ok(l) {
					return l
				}
			case <-deadline:
				t.Fatalf("no %s; qpq chat --json printed:\n%s\nstderr:\n%s", what, strings.Join(seen, "\n"), stderr)
			}
		}
	}
	next("connected", func(l chatJSONLine) bool { return l.Event == "link" && strings.Contains(l.raw, "connected") })

	const text = "from a script: \"quoted\", \x1b[31mred\x1b[0m and a tab\t"
	cmdLine, _ := json.Marshal(map[string]string{"id": "c1", "cmd": "/dm bob " + text})
	if _, err := stdin.Write(append(cmdLine, '\n')); err != nil {
		t.Fatal(err)
	}
	res := next("the result of c1", func(l chatJSONLine) bool { return l.Event == "result" && l.ID == "c1" })
	if !res.OK || res.Data.State != "queued" || res.Data.Text != text {
		t.Errorf("result of /dm: %s", res.raw)
	}
	next("stored", func(l chatJSONLine) bool {
		return l.Event == "delivery" && l.Delivery.State == "stored" && l.Delivery.Ref == res.Data.Ref
	})
	got := recvAll(t, bob, n.p)
	if len(got) != 1 || got[0].Text != text {
		t.Errorf("bob received %+v", got)
	}
	next("delivered", func(l chatJSONLine) bool {
		return l.Event == "delivery" && l.Delivery.State == "delivered" && l.Delivery.Ref == res.Data.Ref
	})

	sendWhenKnown(t, bob, n.p, alice, "a reply\nwith two lines")
	m := next("bob's reply", func(l chatJSONLine) bool { return l.Event == "message" })
	if m.Message.Text != "a reply\nwith two lines" || m.Message.From != "bob" {
		t.Errorf("message event: %s", m.raw)
	}
	io.WriteString(stdin, "/quit\n")
	select {
	case err := <-exited:
		if err != nil {
			t.Errorf("qpq chat --json after /quit: %v\n%s", err, stderr)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("qpq chat --json did not exit after /quit")
	}
}

// TestChatBackendNewNodeNeedsConfirmation: a node as mDNS would announce
// it (its key, never used: the candidate is built here because mDNS must
// not run on the host's links) is shown with the command that confirms
// it, and the mailbox is not opened there until the person names its key
// with /mesh server ADDR#FP; /mesh server ADDR alone names the key.
func TestChatBackendNewNodeNeedsConfirmation(t *testing.T) {
	n := startFixNode(t)
	alice := newUser(t)
	env := testCLIEnv(map[string]string{"QPQ_PASSPHRASE": "", "QPQ_MDNS": "false"})
	h := home.Home{Dir: alice.home}
	usr, err := loadUser(env, h)
	if err != nil {
		t.Fatal(err)
	}
	fp := mustFP(t, n.fp)
	plan := nodePlan{cands: []client.Candidate{{Addr: n.addr, Pin: fp, Name: "mdns lo"}}}
	b, err := newChatBackend(env, h, usr, plan, false)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	ev := &chatEvents{t: t, ch: b.Events()}
	ev.until(20*time.Second, "the new node shown", func(e chat.Event) bool {
		return e.Kind == chat.EventNotice && strings.Contains(e.Notice.Text, "/mesh server "+n.arg())
	})
	time.Sleep(time.Second) // the session is waiting: it must not have gone on
	if st := b.Status(); st.Link.State == "connected" || h.TrustsNode(fp) {
		t.Fatalf("the new node was used before it was confirmed: %+v", st)
	}
	if _, err := b.Server(context.Background(), n.addr); err == nil || !strings.Contains(err.Error(), n.arg()) {
		t.Errorf("/mesh server ADDR of a new node: %v, want the key and ADDR#FP", err)
	}
	p, err := b.Server(context.Background(), n.arg())
	if err != nil || !p.Trusted || p.Addr != n.addr {
		t.Fatalf("/mesh server ADDR#FP: %+v %v", p, err)
	}
	ev.until(20*time.Second, "connected", func(e chat.Event) bool { return e.Kind == chat.EventLink && e.Link.State == "connected" })
	if !h.TrustsNode(fp) {
		t.Error("the confirmed node was not remembered")
	}
}
