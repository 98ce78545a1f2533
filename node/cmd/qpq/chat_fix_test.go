package main

import (
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/quicproquo/qpq/mesh/testkit"
)

// Fixtures of the chat's failure, safety and namespace tests: nodes that
// can be killed and started again on the same port and data dir, and
// users who know each other by name.

// fixNode is a node process that can be killed and restarted as the same
// node: same listen address, same data dir (so the same key and store),
// same flags.
type fixNode struct {
	t    *testing.T
	p    *proc
	args []string // the flags after --listen
	addr string   // the address it was given first, then kept
	fp   string
}

// startFixNode starts a node on a free loopback port with extra flags.
func startFixNode(t *testing.T, args ...string) *fixNode {
	t.Helper()
	n := &fixNode{t: t, args: args}
	n.p = startNode(t, "", append([]string{"--listen", loop}, args...)...)
	st := n.p.mustStatus()
	n.addr, n.fp = st.Listen, st.Fingerprint
	return n
}

// arg is what a client passes to --node: ADDR#FP.
func (n *fixNode) arg() string { return n.addr + "#" + n.fp }

// kill9 kills the node as a power cut would, and waits until it is gone.
func (n *fixNode) kill9() {
	n.t.Helper()
	n.p.signal(syscall.SIGKILL)
	if _, ok := n.p.waitExit(10 * time.Second); !ok {
		n.t.Fatal("the node did not die")
	}
}

// restart starts the node again on its address and data dir. The port
// was the node's until a moment ago; another socket taking it meanwhile
// (the kernel picks free ports at random from a wide range) would make
// the node fail to start, which fails the test loudly, never silently.
func (n *fixNode) restart() {
	n.t.Helper()
	n.p = startNode(n.t, n.p.data, append([]string{"--listen", n.addr}, n.args...)...)
	if fp := n.p.fp(); fp != n.fp {
		n.t.Fatalf("the restarted node has key %s, was %s", fp, n.fp)
	}
}

// linkFixNodes starts k nodes in a line (each --peer the one before,
// --max-links 1) and waits until each link is up.
func linkFixNodes(t *testing.T, k int) []*fixNode {
	t.Helper()
	ns := make([]*fixNode, k)
	for i := range ns {
		a := []string{"--max-links", "1"}
		if i > 0 {
			a = append(a, "--peer", ns[i-1].arg())
		}
		ns[i] = startFixNode(t, a...)
	}
	for i := 0; i+1 < k; i++ {
		a, b := ns[i], ns[i+1]
		testkit.WaitForEvery(t, 20*time.Second, procPoll, "line links", func() bool { return a.p.linkedTo(b.fp) && b.p.linkedTo(a.fp) })
	}
	return ns
}

// befriend makes each of a and b the other's contact under the given
// names.
func befriend(t *testing.T, a user, aName string, b user, bName string) {
	t.Helper()
	qpqOK(t, "contact", "add", b.fp, bName, "--home", a.home)
	qpqOK(t, "contact", "add", a.fp, aName, "--home", b.home)
}

// count is strings.Count, for "shown once" checks with a message.
func countIn(t *testing.T, what, screen, s string, want int) {
	t.Helper()
	if got := strings.Count(screen, s); got != want {
		t.Errorf("%s: %q shown %d times, want %d:\n%s", what, s, got, want, screen)
	}
}

// hostOnly refuses a node address outside loopback for a client started
// on the host (network safety; namespace tests run their clients inside).
func hostOnly(t *testing.T, addrs ...string) {
	t.Helper()
	for _, a := range addrs {
		if !strings.HasPrefix(a, "127.") {
			t.Fatalf("test bug: a client on the host was given node %s", a)
		}
	}
}

// nodesArg joins node arguments for --node A,B.
func nodesArg(ns ...*fixNode) string {
	var s []string
	for _, n := range ns {
		s = append(s, n.arg())
	}
	return strings.Join(s, ",")
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
