package main

import (
	"strings"
	"testing"
	"time"

	"github.com/quicproquo/qpq/mesh/testkit"
)

// The chat's failure tests: its node dies and comes back, its node dies
// for good, the chat itself dies between writing a message down and
// sending it. Real nodes on loopback, the chat in a real terminal (tmux).

// stateLines returns the lines of the chat's screen that report a
// delivery state for text.
func stateLines(h, text, state string) []string {
	var out []string
	if len(text) > 18 {
		text = text[:18] // a state line may shorten the text
	}
	for _, l := range linesWith(h, text) {
		if strings.Contains(l, state) {
			out = append(out, l)
		}
	}
	return out
}

// waitState waits until the chat reports state for the message text.
func (c *chatTerm) waitState(d time.Duration, text, state string) string {
	c.t.Helper()
	return c.waitFor(d, "the chat to show "+state+" for "+text, func(h string) bool { return len(stateLines(h, text, state)) > 0 })
}

// onceEach checks that each text appears on exactly one line of what
// the chat showed (apart from lines that report a delivery state, which
// repeat a sent text by design: one per state).
func onceEach(t *testing.T, h string, texts ...string) {
	t.Helper()
	for _, s := range texts {
		if n := len(linesWith(h, s)); n != 1 {
			t.Errorf("%q shown on %d lines, want once:\n%s", s, n, h)
		}
	}
}

// aliceAndBob makes two users who are each other's contacts, with bob's
// bundle published at node n (so alice can seal to him) and alice's too.
func aliceAndBob(t *testing.T, n *fixNode) (alice, bob user) {
	t.Helper()
	alice, bob = newUser(t), newUser(t)
	befriend(t, alice, "alice", bob, "bob")
	recvAll(t, bob, n.p)
	recvAll(t, alice, n.p)
	return alice, bob
}

// Alice's node is killed (kill -9) and started again on its port and
// data dir. Her chat says it lost the node and reconnects by itself; what
// she typed meanwhile is queued, then stored once the node is back, then
// delivered once bob's recv fetched it; nothing bob sent her is shown
// twice, before or after the outage, and bob reads her message once.
func TestChatReconnectsWhenItsNodeRestarts(t *testing.T) {
	n := startFixNode(t)
	alice, bob := aliceAndBob(t, n)
	c := startChatTerm(t, "", nil, "--home", alice.home, "--node", n.arg())
	c.waitText(15*time.Second, "connected")

	sendWhenKnown(t, bob, n.p, alice, "bob before the outage")
	c.waitText(15*time.Second, "bob before the outage")

	n.kill9()
	c.waitFor(20*time.Second, "the chat to say it lost the node", func(h string) bool {
		return strings.Contains(h, "reconnecting") || strings.Contains(h, "lost")
	})
	c.alive()
	const during = "alice during the outage"
	c.typeLine("/dm bob " + during)
	c.waitState(10*time.Second, during, "queued")
	if e, ok := entryWithText(outboxList(t, alice), during); !ok || e.State != "queued" {
		t.Fatalf("the outbox holds %+v (found %v) while the node is down, want queued", e, ok)
	}

	n.restart()
	c.waitState(30*time.Second, during, "stored")
	msgs := recvAll(t, bob, n.p)
	if got := countTexts(msgs); got[during] != 1 || got["bob before the outage"] != 0 {
		t.Fatalf("bob's recv after the restart: %v", got)
	}
	c.waitState(30*time.Second, during, "delivered")

	sendWhenKnown(t, bob, n.p, alice, "bob after the restart")
	h := c.waitText(15*time.Second, "bob after the restart")
	c.alive()
	onceEach(t, h, "bob before the outage", "bob after the restart")
	for _, st := range []string{"queued", "stored", "delivered"} {
		if l := stateLines(h, during, st); len(l) != 1 {
			t.Errorf("%s shown %d times for the message typed during the outage:\n%s", st, len(l), h)
		}
	}
	if again := recvAll(t, bob, n.p); len(again) != 0 {
		t.Errorf("bob's second recv shows %d messages", len(again))
	}
}

// Alice's chat was given two linked nodes; the first is killed and stays
// down. The chat moves to the second by itself and the message she typed
// meanwhile goes out there: stored, then delivered once bob reads it at
// the second node.
func TestChatFailsOverToTheSecondNode(t *testing.T) {
	ns := linkFixNodes(t, 2)
	a, b := ns[0], ns[1]
	hostOnly(t, a.addr, b.addr)
	alice, bob := aliceAndBob(t, b)
	c := startChatTerm(t, "", nil, "--home", alice.home, "--node", nodesArg(a, b))
	c.waitFor(15*time.Second, "the chat to connect to the first node", func(h string) bool {
		return len(linesWith(h, "connected")) > 0 && strings.Contains(h, a.addr)
	})
	sendWhenKnown(t, bob, b.p, alice, "bob before the outage")
	c.waitText(20*time.Second, "bob before the outage")

	a.kill9()
	const during = "alice after her node died"
	c.typeLine("/dm bob " + during)
	c.waitState(10*time.Second, during, "queued")
	h := c.waitFor(40*time.Second, "the chat to move to the second node", func(h string) bool {
		for _, l := range linesWith(h, b.addr) {
			if strings.Contains(l, "connected") && !strings.Contains(l, "reconnecting") {
				return true
			}
		}
		return false
	})
	c.waitState(20*time.Second, during, "stored")
	testkit.WaitForEvery(t, 10*time.Second, procPoll, "the message to be at the second node", func() bool { return b.p.kind("dm") >= 1 })
	if got := countTexts(recvAll(t, bob, b.p)); got[during] != 1 {
		t.Fatalf("bob at the second node got %v", got)
	}
	h = c.waitState(30*time.Second, during, "delivered")
	c.alive()
	onceEach(t, h, "bob before the outage")
	for _, st := range []string{"queued", "stored", "delivered"} {
		if l := stateLines(h, during, st); len(l) != 1 {
			t.Errorf("%s shown %d times for the message typed during the outage:\n%s", st, len(l), h)
		}
	}
}

// The chat is killed (kill -9) right after it wrote a message to the
// outbox and before it sent it (the QPQ_TEST_HOOK=after-outbox hook, as
// for qpq send). The message waits in the outbox; the next chat sends
// it under the id written first, and bob reads it once.
func TestChatOutboxSurvivesKill9BeforeSending(t *testing.T) {
	n := startFixNode(t)
	alice, bob := aliceAndBob(t, n)
	sendWhenKnown(t, alice, n.p, bob, "learn his bundle") // alice has sealed to bob before
	recvAll(t, bob, n.p)

	c := startChatTerm(t, "", []string{testHookEnv + "=after-outbox"}, "--home", alice.home, "--node", n.arg())
	c.waitText(15*time.Second, "connected")
	const text = "written down, then the chat died"
	c.typeLine("/dm bob " + text)
	testkit.WaitForEvery(t, 10*time.Second, procPoll, "the hook to kill the chat after the outbox write", func() bool { d, _ := c.dead(); return d })
	_, status := c.dead()
	e, ok := entryWithText(outboxList(t, alice), text)
	if !ok || e.State != "queued" || e.Attempts != 0 || len(e.ID) != 64 {
		t.Fatalf("after the chat died (%s): outbox entry %+v (found %v), want queued, sealed and never tried", status, e, ok)
	}
	if k := n.p.kind("dm"); k != 0 {
		t.Fatalf("the node holds %d DMs: the chat sent before it died", k)
	}

	c2 := startChatTerm(t, "", nil, "--home", alice.home, "--node", n.arg())
	c2.waitText(15*time.Second, "connected")
	testkit.WaitForEvery(t, 20*time.Second, procPoll, "the restarted chat to send what the outbox held", func() bool {
		e, _ := entryWithText(outboxList(t, alice), text)
		return e.State == "stored" || e.State == "delivered"
	})
	msgs := recvAll(t, bob, n.p)
	if got := countTexts(msgs); got[text] != 1 || len(msgs) != 1 {
		t.Fatalf("bob got %v, want the one message once", got)
	}
	if msgs[0].ID != e.ID {
		t.Errorf("sent as %s, written down as %s", msgs[0].ID, e.ID)
	}
	testkit.WaitForEvery(t, 20*time.Second, procPoll, "the outbox to say delivered after bob's recv", func() bool {
		e, _ := entryWithText(outboxList(t, alice), text)
		return e.State == "delivered"
	})
	if again := recvAll(t, bob, n.p); len(again) != 0 {
		t.Errorf("bob's second recv shows %d messages", len(again))
	}
	c2.alive()
}
