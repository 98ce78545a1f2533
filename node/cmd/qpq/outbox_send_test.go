package main

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/quicproquo/qpq/mesh/testkit"
)

// outboxList runs `qpq outbox --json` for u.
func outboxList(t *testing.T, u user) []outboxJSON {
	t.Helper()
	code, out, errOut := runQPQ(t, userEnv, "outbox", "--home", u.home, "--json")
	if code != 0 {
		t.Fatalf("outbox: exit %d: %s", code, errOut)
	}
	var list []outboxJSON
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		if line == "" {
			continue
		}
		var e outboxJSON
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			t.Fatalf("outbox printed %q: %v", line, err)
		}
		list = append(list, e)
	}
	return list
}

func entryWithText(list []outboxJSON, text string) (outboxJSON, bool) {
	for _, e := range list {
		if e.Text == text {
			return e, true
		}
	}
	return outboxJSON{}, false
}

// countTexts counts how often each text appears among messages.
func countTexts(msgs []recvJSON) map[string]int {
	n := map[string]int{}
	for _, m := range msgs {
		n[m.Text]++
	}
	return n
}

// `qpq send` killed (kill -9) right after writing the outbox, or right
// after the node stored it and before the outbox says so: the next send
// sends what was left, under the id written first, and the recipient's
// recv shows each message once.
func TestOutboxSurvivesKill9OfSend(t *testing.T) {
	n := startNode(t, "", "--listen", loop)
	node := n.peerArg()
	alice, bob := newUser(t), newUser(t)
	recvAll(t, bob, n) // publishes bob's bundle
	sendWhenKnown(t, alice, n, bob, "one")

	send := func(text, hook string) (int, string) {
		t.Helper()
		env := userEnv
		if hook != "" {
			env = append([]string{testHookEnv + "=" + hook}, userEnv...)
		}
		code, out, _ := runQPQ(t, env, "send", "--home", alice.home, "--node", node, "--to", bob.fp, "--text", text)
		return code, strings.TrimSpace(out)
	}
	if code, _ := send("two", "after-outbox"); code != -1 {
		t.Fatalf("send with the hook after-outbox: exit %d, want killed", code)
	}
	two, ok := entryWithText(outboxList(t, alice), "two")
	if !ok || two.State != "queued" || len(two.ID) != 64 || two.Attempts != 0 {
		t.Fatalf("after kill -9: outbox entry %+v (found %v), want queued, sealed, never tried", two, ok)
	}
	if code, _ := send("three", "after-enqueue"); code != -1 {
		t.Fatalf("send with the hook after-enqueue: exit %d, want killed", code)
	}
	list := outboxList(t, alice)
	three, _ := entryWithText(list, "three")
	if two, _ := entryWithText(list, "two"); two.State != "stored" || three.State != "queued" {
		t.Fatalf("two %s (sent before three), three %s (killed before stored was written)", two.State, three.State)
	}
	// qpq outbox --send sends what is queued without a new message.
	if code, _, e := runQPQ(t, userEnv, "outbox", "--home", alice.home, "--send", "--node", node); code != 0 {
		t.Fatalf("outbox --send: exit %d: %s", code, e)
	}
	code, id4 := send("four", "")
	if code != 0 || len(id4) != 64 {
		t.Fatalf("send four: exit %d %q", code, id4)
	}
	list = outboxList(t, alice)
	for _, text := range []string{"one", "two", "three", "four"} {
		e, _ := entryWithText(list, text)
		if e.State != "stored" {
			t.Errorf("%s: %s (%s)", text, e.State, e.Reason)
		}
	}
	if e, _ := entryWithText(list, "three"); e.ID != three.ID || e.Attempts != 1 {
		// The killed attempt was never written down: one is counted.
		t.Errorf("three was resent as %s after %d attempts; want the id written first (%s), one attempt recorded", e.ID, e.Attempts, three.ID)
	}
	msgs := recvAll(t, bob, n)
	got := countTexts(msgs)
	for _, text := range []string{"one", "two", "three", "four"} {
		if got[text] != 1 {
			t.Errorf("bob's recv shows %q %d times, want once (all: %v)", text, got[text], got)
		}
	}
	for _, m := range msgs {
		if m.Text == "two" && m.ID != two.ID {
			t.Errorf("two arrived as %s, written as %s", m.ID, two.ID)
		}
	}
	if again := recvAll(t, bob, n); len(again) != 0 {
		t.Errorf("a second recv shows %d messages", len(again))
	}
}

// A message sent with --wait while the node is down is queued, stored
// once the node is back, and delivered once the recipient's recv
// acknowledged it: send --wait prints each state and exits 0.
func TestSendWaitQueuedStoredDelivered(t *testing.T) {
	data := t.TempDir()
	n := startNode(t, data, "--listen", loop)
	addr, node := n.addr(), n.peerArg()
	alice, bob := newUser(t), newUser(t)
	recvAll(t, bob, n)
	sendWhenKnown(t, alice, n, bob, "hello") // remembers bob's bundle
	n.signal(syscall.SIGTERM)
	if _, ok := n.waitExit(10 * time.Second); !ok {
		t.Fatal("node did not stop")
	}

	out, errOut := &syncBuf{}, &syncBuf{}
	cmd := exec.Command(qpqBin, "send", "--home", alice.home, "--node", node, "--to", bob.fp, "--text", "while down", "--wait", "40s", "--json")
	cmd.Env = append(cleanEnv(), userEnv...)
	cmd.Stdout, cmd.Stderr = out, errOut
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		cmd.Wait()
		close(done)
	}()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-done
		if t.Failed() {
			t.Logf("send --wait stdout:\n%s\nstderr:\n%s", out, errOut)
		}
	})
	states := func() []string {
		var s []string
		for _, line := range strings.Split(strings.TrimSpace(out.String()), "\n") {
			var j sendJSON
			if json.Unmarshal([]byte(line), &j) == nil {
				s = append(s, j.State)
			}
		}
		return s
	}
	testkit.WaitForEvery(t, 10*time.Second, procPoll, "send --wait to say queued", func() bool {
		return strings.Join(states(), " ") == "queued"
	})
	if e, _ := entryWithText(outboxList(t, alice), "while down"); e.State != "queued" {
		t.Fatalf("qpq outbox says %s while the node is down", e.State)
	}
	n2 := startNode(t, data, "--listen", addr)
	testkit.WaitForEvery(t, 20*time.Second, procPoll, "send --wait to say stored once the node is back", func() bool {
		return strings.Join(states(), " ") == "queued stored"
	})
	msgs := recvAll(t, bob, n2)
	if got := countTexts(msgs); got["while down"] != 1 {
		t.Fatalf("bob got %v", got)
	}
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("send --wait did not end after bob's recv")
	}
	if code := cmd.ProcessState.ExitCode(); code != 0 || strings.Join(states(), " ") != "queued stored delivered" {
		t.Fatalf("send --wait: exit %d, states %v; want 0 and queued stored delivered", code, states())
	}
	if e, _ := entryWithText(outboxList(t, alice), "while down"); e.State != "delivered" {
		t.Fatalf("qpq outbox says %s after delivery", e.State)
	}
}

// --wait that ends before a receipt exits 1 and says the last state; a
// message whose TTL passes without a receipt becomes expired.
func TestSendWaitEndsNotDeliveredThenExpired(t *testing.T) {
	n := startNode(t, "", "--listen", loop)
	node := n.peerArg()
	alice, bob := newUser(t), newUser(t)
	recvAll(t, bob, n)
	sendWhenKnown(t, alice, n, bob, "hello")
	code, out, errOut := runQPQ(t, userEnv, "send", "--home", alice.home, "--node", node, "--to", bob.fp, "--text", "short-lived", "--ttl", "2s", "--wait", "1s")
	if code != 1 || !strings.Contains(errOut, "the last state is stored") || len(strings.TrimSpace(out)) != 64 {
		t.Fatalf("send --wait 1s: exit %d, stdout %q, stderr:\n%s", code, out, errOut)
	}
	testkit.WaitForEvery(t, 10*time.Second, 200*time.Millisecond, "the 2s TTL to pass", func() bool {
		e, _ := entryWithText(outboxList(t, alice), "short-lived")
		return e.State == "expired"
	})
}

// The history keeps what recv showed and send sent, bounded (oldest
// first), and its file shows none of it without the key.
func TestHistoryKeepsBoundedAndEncrypted(t *testing.T) {
	n := startNode(t, "", "--listen", loop)
	alice, bob := newUser(t), newUser(t)
	recvAll(t, bob, n)
	secret := "the plan is at the water tower"
	sendWhenKnown(t, alice, n, bob, secret)
	for _, text := range []string{"second", "third"} {
		sendWhenKnown(t, alice, n, bob, text)
	}
	if got := countTexts(recvAll(t, bob, n)); len(got) != 3 {
		t.Fatalf("bob got %v", got)
	}
	hist := func(u user, args ...string) []historyJSON {
		t.Helper()
		code, out, errOut := runQPQ(t, userEnv, append([]string{"history", "--home", u.home, "--json"}, args...)...)
		if code != 0 {
			t.Fatalf("history: exit %d: %s", code, errOut)
		}
		var ms []historyJSON
		for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
			var m historyJSON
			if json.Unmarshal([]byte(line), &m) == nil {
				ms = append(ms, m)
			}
		}
		return ms
	}
	in := hist(bob)
	if len(in) != 3 || in[0].Text != secret || in[0].Dir != "in" || in[0].From != alice.fp || in[2].Seq != 3 {
		t.Fatalf("bob's history: %+v", in)
	}
	sent := hist(alice, bob.fp, "2")
	if len(sent) != 2 || sent[0].Text != "second" || sent[1].Dir != "out" || sent[1].Peer != bob.fp {
		t.Fatalf("alice's last 2 to bob: %+v", sent)
	}
	for _, u := range []user{alice, bob} {
		raw, err := os.ReadFile(filepath.Join(u.home, "history.db"))
		if err != nil {
			t.Fatal(err)
		}
		ob, _ := os.ReadFile(filepath.Join(u.home, "outbox.db"))
		if strings.Contains(string(raw), "water tower") || strings.Contains(string(ob), "water tower") {
			t.Fatal("the plaintext body is in the file")
		}
	}
	if code, _, errOut := runQPQ(t, userEnv, "history", "--home", bob.home, "--keep", "2"); code != 0 {
		t.Fatalf("history --keep 2: %s", errOut)
	}
	if in := hist(bob); len(in) != 2 || in[0].Text != "second" {
		t.Fatalf("after --keep 2: %+v", in)
	}
	// The plain view is escaped and marks who wrote what.
	code, out, _ := runQPQ(t, userEnv, "history", "--home", alice.home)
	if code != 0 || !strings.Contains(out, "you to "+bob.fp[:4]) || !strings.Contains(out, secret) {
		t.Fatalf("alice's history:\n%s", out)
	}
}

// The second of three messages never leaves (its TTL ends in the
// outbox): bob's recv, and his history later, say one from alice has not
// arrived.
func TestHistoryGapNoticeWhenOneNeverArrives(t *testing.T) {
	n := startNode(t, "", "--listen", loop)
	node := n.peerArg()
	alice, bob := newUser(t), newUser(t)
	if code, _, e := runQPQ(t, userEnv, "contact", "add", alice.fp, "alice", "--home", bob.home); code != 0 {
		t.Fatal(e)
	}
	recvAll(t, bob, n)
	sendWhenKnown(t, alice, n, bob, "first")
	hook := append([]string{testHookEnv + "=after-outbox"}, userEnv...)
	if code, _, _ := runQPQ(t, hook, "send", "--home", alice.home, "--node", node, "--to", bob.fp, "--text", "second", "--ttl", "1s"); code != -1 {
		t.Fatalf("send second: exit %d, want killed", code)
	}
	testkit.WaitForEvery(t, 5*time.Second, 200*time.Millisecond, "the second's TTL to end in the outbox", func() bool {
		e, _ := entryWithText(outboxList(t, alice), "second")
		return e.State == "expired"
	})
	sendWhenKnown(t, alice, n, bob, "third")
	code, _, errOut := runQPQ(t, userEnv, "recv", "--home", bob.home, "--node", node, "--json")
	if code != 0 || !strings.Contains(errOut, "1 message from alice not yet arrived") {
		t.Fatalf("recv: exit %d, stderr:\n%s", code, errOut)
	}
	code, _, errOut = runQPQ(t, userEnv, "history", "--home", bob.home, "alice")
	if code != 0 || !strings.Contains(errOut, "1 message from alice not yet arrived") {
		t.Fatalf("history: exit %d, stderr:\n%s", code, errOut)
	}
}

// `qpq outbox` shows a body a person typed escaped on one line; the JSON
// keeps it exact. --wait is refused for channels (no receipts).
func TestOutboxListsEscapedAndJSONExact(t *testing.T) {
	alice, bob := newUser(t), newUser(t)
	text := "line one\n\x1b[2Jalice: forged"
	hook := append([]string{testHookEnv + "=after-outbox"}, userEnv...)
	if code, _, _ := runQPQ(t, hook, "send", "--home", alice.home, "--node", "127.0.0.1:9", "--to", bob.fp, "--text", text); code != -1 {
		t.Fatalf("send: exit %d, want killed by the hook", code)
	}
	code, out, _ := runQPQ(t, userEnv, "outbox", "--home", alice.home)
	if code != 0 || strings.Count(strings.TrimSpace(out), "\n") != 0 || strings.Contains(out, "\x1b") || !strings.Contains(out, `\x1b[2J`) || !strings.Contains(out, "queued") {
		t.Fatalf("outbox (exit %d):\n%q", code, out)
	}
	if e, ok := entryWithText(outboxList(t, alice), text); !ok || e.State != "queued" || e.To != bob.fp || e.ID != "" {
		t.Fatalf("outbox --json: %+v (found %v); want the exact text, queued, unsealed (bob's bundle never seen)", e, ok)
	}
	if code, _, e := runQPQ(t, userEnv, "send", "--home", alice.home, "--node", "127.0.0.1:9", "--channel", "town", "--text", "x", "--wait"); code != 2 || !strings.Contains(e, "--wait needs --to") {
		t.Fatalf("send --channel --wait: exit %d: %s", code, e)
	}
}
