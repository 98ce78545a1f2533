package main

import (
	"strings"
	"testing"
	"time"

	"github.com/quicproquo/qpq/mesh/testkit"
	"github.com/quicproquo/qpq/node/chat"
)

// The failure scenarios of the chat run against its backend in this
// process (real nodes on loopback, real QUIC, real files; no terminal):
// what the REPL would show is the backend's events. The tmux tests
// (chat_fail_test.go, chat_safety_test.go) drive the same through the
// terminal.

// untilNew is ev.until for an event that comes after those read so far.
func untilNew(ev *chatEvents, d time.Duration, what string, ok func(chat.Event) bool) chat.Event {
	mark, i := len(ev.got), 0
	return ev.until(d, what, func(e chat.Event) bool {
		i++ // until asks about each event once, in order
		return i > mark && ok(e)
	})
}

func isMessage(text string) func(chat.Event) bool {
	return func(e chat.Event) bool { return e.Kind == chat.EventMessage && e.Message.Text == text }
}

func isLink(state, node string) func(chat.Event) bool {
	return func(e chat.Event) bool {
		return e.Kind == chat.EventLink && e.Link.State == state && (node == "" || e.Link.Node == node)
	}
}

func isNotice(sub string) func(chat.Event) bool {
	return func(e chat.Event) bool { return e.Kind == chat.EventNotice && strings.Contains(e.Notice.Text, sub) }
}

// shownOnce checks each message text came as one message event, and
// each delivery state of ref once.
func shownOnce(t *testing.T, ev *chatEvents, ref uint64, texts ...string) {
	t.Helper()
	msgs, states := map[string]int{}, map[string]int{}
	for _, e := range ev.got {
		switch {
		case e.Kind == chat.EventMessage:
			msgs[e.Message.Text]++
		case e.Kind == chat.EventDelivery && e.Delivery.Ref == ref:
			states[e.Delivery.State]++
		}
	}
	for _, s := range texts {
		if msgs[s] != 1 {
			t.Errorf("%q came %d times; events: %s", s, msgs[s], eventsText(ev.got))
		}
	}
	for _, s := range []string{"queued", "stored", "delivered"} {
		if states[s] != 1 {
			t.Errorf("state %s came %d times; events: %s", s, states[s], eventsText(ev.got))
		}
	}
}

// Alice's node is killed and started again on its port and data dir: the
// backend says the link is down, the message typed meanwhile goes
// queued, stored once the node is back, delivered once bob read it;
// nothing comes twice.
func TestChatBackendReconnectsWhenItsNodeRestarts(t *testing.T) {
	t.Parallel()
	n := startFixNode(t)
	alice, bob := aliceAndBob(t, n)
	b, ev := openTestBackend(t, alice, n.arg())
	ev.until(15*time.Second, "the link up", isLink("connected", ""))
	sendWhenKnown(t, bob, n.p, alice, "bob before the outage")
	ev.until(15*time.Second, "bob's message", isMessage("bob before the outage"))

	n.kill9()
	untilNew(ev, 20*time.Second, "the link down", func(e chat.Event) bool { return e.Kind == chat.EventLink && e.Link.State != "connected" })
	d, err := b.SendDM(t.Context(), "bob", "alice during the outage")
	if err != nil || d.State != "queued" {
		t.Fatalf("SendDM while down: %+v %v", d, err)
	}
	n.restart()
	ev.until(30*time.Second, "stored after the restart", isState(d.Ref, "stored"))
	if got := countTexts(recvAll(t, bob, n.p)); got["alice during the outage"] != 1 || len(got) != 1 {
		t.Fatalf("bob's recv: %v", got)
	}
	ev.until(30*time.Second, "delivered", isState(d.Ref, "delivered"))
	sendWhenKnown(t, bob, n.p, alice, "bob after the restart")
	ev.until(15*time.Second, "bob's second message", isMessage("bob after the restart"))
	shownOnce(t, ev, d.Ref, "bob before the outage", "bob after the restart")
}

// Two linked nodes; the first is killed for good: the backend moves to
// the second, and the message typed meanwhile is stored there and
// delivered.
func TestChatBackendFailsOverToTheSecondNode(t *testing.T) {
	t.Parallel()
	ns := linkFixNodes(t, 2)
	a, bn := ns[0], ns[1]
	alice, bob := aliceAndBob(t, bn)
	b, ev := openTestBackend(t, alice, nodesArg(a, bn))
	ev.until(15*time.Second, "the link up at the first node", isLink("connected", a.addr))
	sendWhenKnown(t, bob, bn.p, alice, "bob before the outage")
	ev.until(20*time.Second, "bob's message", isMessage("bob before the outage"))

	a.kill9()
	d, err := b.SendDM(t.Context(), "bob", "alice after her node died")
	if err != nil {
		t.Fatal(err)
	}
	untilNew(ev, 45*time.Second, "the move to the second node", isLink("connected", bn.addr))
	ev.until(20*time.Second, "stored at the second node", isState(d.Ref, "stored"))
	if got := countTexts(recvAll(t, bob, bn.p)); got["alice after her node died"] != 1 || len(got) != 1 {
		t.Fatalf("bob at the second node: %v", got)
	}
	ev.until(30*time.Second, "delivered", isState(d.Ref, "delivered"))
	ev.until(time.Second, "a notice of the move", isNotice("to the node at "+bn.addr))
	shownOnce(t, ev, d.Ref, "bob before the outage")
}

// Bob's second of three never leaves his outbox (killed after the write,
// 1 s TTL). The third tells alice's backend one has not arrived; once the
// third's 3 s TTL has passed, with no other message, it says missing.
func TestChatBackendGapTurnsMissingWithoutAnotherMessage(t *testing.T) {
	t.Parallel()
	n := startFixNode(t)
	alice, bob := aliceAndBob(t, n)
	_, ev := openTestBackend(t, alice, n.arg())
	sendWhenKnown(t, bob, n.p, alice, "first of three")
	ev.until(15*time.Second, "the first", isMessage("first of three"))
	dropSecond(t, bob, n)
	sendWhenKnown(t, bob, n.p, alice, "third of three", "--ttl", "3s")
	ev.until(15*time.Second, "the gap notice", isNotice("1 message from bob not yet arrived"))
	ev.until(20*time.Second, "the missing notice", isNotice("1 message from bob missing"))
}

// dropSecond writes bob's second message to alice into his outbox with a
// 1 s TTL and kills the send before it leaves, then waits until the TTL
// ended there: the message has a sequence number and will never arrive.
func dropSecond(t *testing.T, bob user, n *fixNode) {
	t.Helper()
	hook := append([]string{testHookEnv + "=after-outbox"}, userEnv...)
	if code, _, _ := runQPQ(t, hook, "send", "--home", bob.home, "--node", n.arg(), "--to", "alice", "--text", "second of three", "--ttl", "1s"); code != -1 {
		t.Fatalf("send second: exit %d, want killed by the hook", code)
	}
	testkit.WaitForEvery(t, 5*time.Second, 100*time.Millisecond, "the second's TTL to end in bob's outbox", func() bool {
		e, _ := entryWithText(outboxList(t, bob), "second of three")
		return e.State == "expired"
	})
}
