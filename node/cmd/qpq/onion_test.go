package main

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/quicproquo/qpq/mesh/testkit"
	"github.com/quicproquo/qpq/node/chat"
)

// onionRelaysKnown waits until node p knows n onion relays.
func onionRelaysKnown(t *testing.T, p *proc, n int) {
	t.Helper()
	testkit.WaitForEvery(t, 30*time.Second, procPoll, "the node to know the mesh's onion relays", func() bool {
		st, err := p.status()
		return err == nil && st.Onion.Relays >= n
	})
}

// sendJSONOf runs qpq send --json and returns its last line and exit code.
func sendJSONOf(t *testing.T, from user, node *proc, to user, text string, extra ...string) (int, sendJSON, string) {
	t.Helper()
	args := append([]string{"send", "--home", from.home, "--node", node.peerArg(), "--to", to.fp, "--text", text, "--json"}, extra...)
	code, out, errOut := runQPQIn(t, node.ns, userEnv, args...)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	var j sendJSON
	json.Unmarshal([]byte(lines[len(lines)-1]), &j)
	return code, j, errOut
}

// qpq send --route onion on a line of five nodes: the DM goes through
// three relays (none of them the sender's node), stored only once the
// exit replied, and bob at the far end reads it once; --route direct
// hands the next one to the node, and says so.
func TestSendByOnionRoute(t *testing.T) {
	ns := lineOf(t, 5)
	alice, bob := newUser(t), newUser(t)
	recvAll(t, bob, ns[4])
	onionRelaysKnown(t, ns[0], 5)
	var j sendJSON
	testkit.WaitForEvery(t, 30*time.Second, procPoll, "the DM to be stored by onion", func() bool {
		code, got, _ := sendJSONOf(t, alice, ns[0], bob, "by onion", "--route", "onion")
		j = got
		return code == 0
	})
	if j.State != "stored" || j.Route != "onion" || j.Relays != 3 {
		t.Fatalf("send --route onion printed %+v, want stored by onion through 3 relays", j)
	}
	peeled := 0
	for i, n := range ns {
		st := n.mustStatus()
		peeled += int(st.Onion.Peeled)
		// The sender's node forwards the DM's packet without peeling it,
		// and peels the reply's last layer, which names its client.
		if i == 0 && (st.Onion.Entered != 1 || st.Onion.Peeled != 1 || st.Onion.Delivered != 1) {
			t.Errorf("the sender's node: %+v, want the packet entered and the reply peeled and delivered", st.Onion)
		}
	}
	// Three layers on the way, and the reply's three on the way back
	// (two of the relays, then the sender's node).
	if peeled != 6 {
		t.Errorf("the nodes peeled %d layers, want 3 for the DM and 3 for the reply", peeled)
	}
	msgs := recvAll(t, bob, ns[4])
	if len(msgs) != 1 || msgs[0].ID != j.ID || msgs[0].Text != "by onion" || msgs[0].From != alice.fp {
		t.Fatalf("bob got %+v, want the one DM %s from alice", msgs, j.ID)
	}

	code, d, errOut := sendJSONOf(t, alice, ns[0], bob, "directly", "--route", "direct")
	if code != 0 || d.State != "stored" || d.Route != "" {
		t.Fatalf("send --route direct: %d %+v %s", code, d, errOut)
	}
}

// With fewer than three relays besides the node, --route onion keeps the
// DM queued and says why; auto sends it directly and says that.
func TestSendOnionNeedsThreeRelays(t *testing.T) {
	ns := lineOf(t, 2)
	alice, bob := newUser(t), newUser(t)
	recvAll(t, bob, ns[1])
	onionRelaysKnown(t, ns[0], 2)
	var j sendJSON
	var code int
	testkit.WaitForEvery(t, 30*time.Second, procPoll, "bob's bundle at a", func() bool {
		code, j, _ = sendJSONOf(t, alice, ns[0], bob, "only by onion", "--route", "onion")
		return j.ID != "" // sealed: the bundle was found
	})
	if code == 0 || j.State != "queued" || !strings.Contains(j.Reason, "relays known") {
		t.Fatalf("send --route onion with one relay: exit %d, %+v; want it queued, saying how many relays are known", code, j)
	}
	code, j, _ = sendJSONOf(t, alice, ns[0], bob, "auto", "--route", "auto")
	if code != 0 || j.State != "stored" || j.Route != "direct" || !strings.Contains(j.RouteNote, "relays known") {
		t.Fatalf("send --route auto with one relay: exit %d, %+v; want it stored directly, saying why", code, j)
	}
}

// onionChats starts a line of five nodes that know each other as onion
// relays, with alice's chat at the first and bob's at the last, both
// connected.
func onionChats(t *testing.T) (ns []*fixNode, a *chatBackend, aev, bev *chatEvents) {
	t.Helper()
	ns = linkFixNodes(t, 5)
	alice, bob := newUser(t), newUser(t)
	befriend(t, alice, "alice", bob, "bob")
	onionRelaysKnown(t, ns[0].p, 5)
	a, aev = openTestBackend(t, alice, ns[0].arg())
	_, bev = openTestBackend(t, bob, ns[4].arg())
	aev.until(20*time.Second, "alice connected", func(e chat.Event) bool { return e.Kind == chat.EventLink && e.Link.State == "connected" })
	bev.until(20*time.Second, "bob connected", func(e chat.Event) bool { return e.Kind == chat.EventLink && e.Link.State == "connected" })
	return ns, a, aev, bev
}

// qpq chat sends by onion by default once its node knows three relays
// besides itself: on a line of five, alice's DM is stored after the
// exit's reply, a notice says it went by onion, and bob reads it.
func TestChatSendsByOnionByDefault(t *testing.T) {
	_, a, aev, bev := onionChats(t)
	if mode, _, _ := a.Route(""); mode != "auto" {
		t.Fatalf("the chat's route is %q by default, want auto", mode)
	}
	d, err := a.SendDM(context.Background(), "bob", "by onion, by default")
	if err != nil {
		t.Fatal(err)
	}
	aev.until(30*time.Second, "the notice that it went by onion", func(e chat.Event) bool {
		return e.Kind == chat.EventNotice && strings.Contains(e.Notice.Text, "sent by onion through 3 relays")
	})
	aev.until(30*time.Second, "stored", isState(d.Ref, "stored"))
	m := bev.until(30*time.Second, "bob's message", func(e chat.Event) bool { return e.Kind == chat.EventMessage }).Message
	if m.Text != "by onion, by default" || m.From != "alice" {
		t.Fatalf("bob got %+v", m)
	}
}

// With --decoy-rate the chat sends cover onion packets to its node at
// random times: each goes through 3 relays like a DM, its exit drops it
// and replies (so the entry node sees a reply either way), and a DM
// sent meanwhile takes a tick of the same clock and arrives once.
func TestChatCoverTraffic(t *testing.T) {
	ns, a, aev, bev := onionChats(t)
	a.Cover(10)
	testkit.WaitForEvery(t, 30*time.Second, procPoll, "alice's chat to send 10 cover packets", func() bool { return a.routes.CoverSent() >= 10 })
	d, err := a.SendDM(context.Background(), "bob", "among the decoys")
	if err != nil {
		t.Fatal(err)
	}
	aev.until(30*time.Second, "stored", isState(d.Ref, "stored"))
	m := bev.until(30*time.Second, "bob's message", func(e chat.Event) bool { return e.Kind == chat.EventMessage }).Message
	if m.Text != "among the decoys" {
		t.Fatalf("bob got %+v", m)
	}
	var cover, exited int64
	for _, n := range ns {
		st, err := n.p.status()
		if err != nil {
			t.Fatal(err)
		}
		cover += st.Onion.Cover
		exited += st.Onion.Exited
	}
	if cover < 10 || exited != 1 {
		t.Errorf("the exits dropped %d cover packets and injected %d messages; want at least 10 and 1", cover, exited)
	}
	entry, err := ns[0].p.status()
	if err != nil {
		t.Fatal(err)
	}
	if entry.Onion.Delivered < 10 {
		t.Errorf("alice's node handed %d replies to her, want one per cover packet (at least 10)", entry.Onion.Delivered)
	}
}

// qpq recv --follow --decoy-rate sends cover onion packets to its node
// while it waits, as the chat does: the exits drop them and reply, and
// the node hands the replies back. Without --follow the flag is refused.
func TestRecvFollowSendsCover(t *testing.T) {
	ns := linkFixNodes(t, 5)
	bob := newUser(t)
	onionRelaysKnown(t, ns[0].p, 5)
	startFollow(t, bob, ns[0].arg(), "--decoy-rate", "10")
	testkit.WaitForEvery(t, 30*time.Second, procPoll, "the exits to drop 5 cover packets and bob's node to hand back their replies", func() bool {
		var cover int64
		for _, n := range ns {
			if st, err := n.p.status(); err == nil {
				cover += st.Onion.Cover
			}
		}
		entry, err := ns[0].p.status()
		return err == nil && cover >= 5 && entry.Onion.Delivered >= 5
	})
	code, _, errOut := runQPQ(t, userEnv, "recv", "--home", bob.home, "--node", ns[0].arg(), "--decoy-rate", "1")
	if code != exitUsage || !strings.Contains(errOut, "needs --follow") {
		t.Errorf("recv --decoy-rate without --follow: exit %d, %q", code, errOut)
	}
}
