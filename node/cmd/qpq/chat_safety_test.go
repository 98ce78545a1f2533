package main

import (
	"bufio"
	"encoding/json"
	"io"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/quicproquo/qpq/mesh/testkit"
	"github.com/quicproquo/qpq/node/display"
	"github.com/quicproquo/qpq/node/safety"
)

// The chat's safety tests: what a stranger's text can do to the screen,
// a contact whose identity changed, and messages that never arrive.

// Alice's chat shows a message from bob, her contact, then one from a
// stranger who forges a header like bob's (and alice's) on a line of its
// own and tries to clear the screen and retitle the terminal. The chat
// shows the stranger's message as one block, marked not a contact, its
// control characters visible as escapes: the screen is not cleared (what
// was shown before is still there), no line starts like a real header
// with the forged text, nothing raw reaches the terminal. The --json
// chat gives the exact text.
func TestChatShowsAForgedLineNeutralised(t *testing.T) {
	n := startFixNode(t)
	alice, bob := aliceAndBob(t, n)
	mallory := newUser(t)

	c := startChatTerm(t, "", nil, "--home", alice.home, "--node", n.arg())
	c.waitText(15*time.Second, "connected")
	sendWhenKnown(t, bob, n.p, alice, "the real one from bob")
	h := c.waitText(15*time.Second, "the real one from bob")
	// The header of a real message, as the chat showed it: everything on
	// its line before the text.
	real := linesWith(h, "the real one from bob")[0]
	header := strings.TrimSpace(real[:strings.Index(real, "the real one from bob")])
	if header == "" || !strings.Contains(header, "bob") {
		t.Fatalf("bob's message is shown without a header naming him: %q", real)
	}
	forgedHeader := strings.Replace(header, "bob", "alice", 1)
	forgery := "hi\n" + header + " the door code is 4711\n" + forgedHeader + " please send it to me\x1b[2J\x1b[H\x1b]0;pwned\x07\r\u202eevil"
	sendWhenKnown(t, mallory, n.p, alice, forgery)
	h = c.waitText(15*time.Second, "the door code is 4711")
	scr := c.screen()
	c.alive()

	if !strings.Contains(scr, "the real one from bob") {
		t.Errorf("the screen was cleared: bob's earlier message is gone from the visible pane:\n%s", scr)
	}
	for _, l := range strings.Split(h, "\n") {
		tl := strings.TrimPrefix(l, "> ") // the prompt, when a line is drawn beside it
		for _, fake := range []string{header + " the door code", forgedHeader + " please send"} {
			if strings.HasPrefix(tl, fake) {
				t.Errorf("a forged line starts like a real header: %q", l)
			}
		}
	}
	hs := linesWith(h, "hi")
	var head string
	for _, l := range hs {
		if strings.HasSuffix(strings.TrimRight(l, " "), "hi") {
			head = l
		}
	}
	if head == "" || !strings.Contains(head, display.NotContact) || !strings.Contains(head, mallory.fp[:4]) {
		t.Errorf("the stranger's message is not shown under a header with their code marked %q: %q\n%s", display.NotContact, head, h)
	}
	if !strings.Contains(h, `\x1b[2J`) {
		t.Errorf("the escape sequence is not shown as an escape:\n%s", h)
	}
	// What tmux received: a raw OSC would have set the pane title.
	if title, _ := c.tmux("display-message", "-p", "-t", c.name, "#{pane_title}"); strings.Contains(title, "pwned") {
		t.Errorf("the stranger retitled the terminal: %q", title)
	}

	// --json keeps the exact text.
	c.typeLine("/quit")
	testkit.WaitForEvery(t, 10*time.Second, procPoll, "the chat to quit", func() bool { d, _ := c.dead(); return d })
	sendWhenKnown(t, mallory, n.p, alice, forgery)
	ev := chatJSONFirst(t, alice, n, func(m map[string]any) bool { return m["event"] == "message" })
	if msg, _ := ev["message"].(map[string]any); msg == nil || msg["text"] != forgery {
		t.Fatalf("--json message event %v; want the exact text %q", ev, forgery)
	}
}

// chatJSONFirst runs `qpq chat --json` until it prints an event that
// matches, and returns it.
func chatJSONFirst(t *testing.T, u user, n *fixNode, match func(map[string]any) bool) map[string]any {
	t.Helper()
	cmd := exec.Command(qpqBin, "chat", "--json", "--home", u.home, "--node", n.arg())
	cmd.Env = append(cleanEnv(), userEnv...)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	errOut := &syncBuf{}
	cmd.Stderr = errOut
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	found := make(chan map[string]any, 1)
	var seen syncBuf
	go func() {
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			seen.Write(append(sc.Bytes(), '\n'))
			var m map[string]any
			if json.Unmarshal(sc.Bytes(), &m) == nil && match(m) {
				found <- m
				break
			}
		}
		io.Copy(io.Discard, stdout)
	}()
	defer func() {
		stdin.Close()
		cmd.Process.Kill()
		cmd.Wait()
	}()
	select {
	case m := <-found:
		return m
	case <-time.After(20 * time.Second):
		t.Fatalf("chat --json printed no matching event:\n%s\nstderr:\n%s", seen.String(), errOut)
	}
	return nil
}

// Bob re-creates his identity and alice is given the new one under his
// name. Her chat warns with both safety numbers, refuses /dm bob (nothing
// reaches the outbox or the node) until she types /verify bob ok, and
// then sends to the new bob.
func TestChatChangedIdentityWarnsAndSendsNothingUntilVerified(t *testing.T) {
	n := startFixNode(t)
	alice, bob := aliceAndBob(t, n)
	newBob := newUser(t)
	recvAll(t, newBob, n.p) // publishes the new bundle
	if code, _, _ := runQPQ(t, userEnv, "contact", "add", "qpq:user/"+newBob.fp, "bob", "--home", alice.home); code != 1 {
		t.Fatalf("contact add of bob's new identity: exit %d, want 1 (a warning)", code)
	}
	a := mustFP(t, alice.fp)
	oldNum, newNum := safety.Number(a, mustFP(t, bob.fp)), safety.Number(a, mustFP(t, newBob.fp))

	c := startChatTerm(t, "", nil, "--home", alice.home, "--node", n.arg())
	c.waitText(15*time.Second, "connected")
	const secret = "the secret for bob"
	c.typeLine("/dm bob " + secret)
	h := c.waitText(10*time.Second, "/verify bob")
	h = c.waitFor(10*time.Second, "the chat to show both safety numbers", func(h string) bool {
		return containsNumber(h, oldNum) && containsNumber(h, newNum)
	})
	if !strings.Contains(strings.ToLower(h), "changed") {
		t.Errorf("the warning does not say the identity changed:\n%s", h)
	}
	if _, ok := entryWithText(outboxList(t, alice), secret); ok {
		t.Fatal("the message to bob's unaccepted identity was written to the outbox")
	}
	if k := n.p.kind("dm"); k != 0 {
		t.Fatalf("the node holds %d DMs after the refused /dm", k)
	}

	c.typeLine("/verify bob ok")
	h = c.waitFor(10*time.Second, "the chat to answer /verify bob ok", func(h string) bool {
		i := strings.LastIndex(h, "/verify bob ok")
		return i >= 0 && strings.Count(h[i:], "\n") >= 1 && strings.TrimSpace(h[i+len("/verify bob ok"):]) != ">"
	})
	if cl := contactList(t, alice)["bob"]; cl.Fingerprint != newBob.fp || cl.Changed != "" || !cl.Verified {
		// The rest is still tested: accepted the other way the issue names.
		t.Errorf("/verify bob ok did not accept and verify bob's new identity (%+v):\n%s", cl, h[strings.LastIndex(h, "/verify bob ok"):])
		qpqOK(t, "contact", "accept", "bob", "--home", alice.home)
	}
	const hello = "hello new bob"
	c.typeLine("/dm bob " + hello)
	c.waitState(20*time.Second, hello, "stored")
	msgs := recvAll(t, newBob, n.p)
	if len(msgs) != 1 || msgs[0].Text != hello {
		t.Fatalf("new bob got %+v", msgs)
	}
	if old := recvAll(t, bob, n.p); len(old) != 0 {
		t.Fatalf("the old bob got %+v", old)
	}
	c.alive()
}

// containsNumber reports whether a safety number is shown in h, in one
// line or as its digit groups across lines.
func containsNumber(h, num string) bool {
	if strings.Contains(h, num) {
		return true
	}
	flat := strings.Join(strings.Fields(h), " ")
	return strings.Contains(flat, num)
}

// Bob sends alice three messages; the second is written to his outbox
// with a 1 s TTL and never sent (his send is killed right after the
// outbox write, and the TTL ends there). The third, with a short TTL,
// tells alice's chat that one from bob has not arrived; once the third's
// TTL has passed (the bound of the second's), the chat says it is
// missing.
func TestChatGapOfOneNotYetArrivedThenMissing(t *testing.T) {
	n := startFixNode(t)
	alice, bob := aliceAndBob(t, n)
	c := startChatTerm(t, "", nil, "--home", alice.home, "--node", n.arg())
	c.waitText(15*time.Second, "connected")

	sendWhenKnown(t, bob, n.p, alice, "first of three")
	c.waitText(15*time.Second, "first of three")
	dropSecond(t, bob, n)
	sendWhenKnown(t, bob, n.p, alice, "third of three", "--ttl", "3s")
	h := c.waitText(15*time.Second, "1 message from bob not yet arrived")
	if !strings.Contains(h, "third of three") {
		t.Fatalf("the gap notice came without the third message:\n%s", h)
	}
	if strings.Contains(h, "second of three") {
		t.Fatalf("the second message arrived after all:\n%s", h)
	}
	h = c.waitText(20*time.Second, "1 message from bob missing")
	c.alive()
	onceEach(t, h, "first of three", "third of three", "1 message from bob not yet arrived", "1 message from bob missing")
}
