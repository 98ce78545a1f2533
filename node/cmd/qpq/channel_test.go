package main

import (
	"strings"
	"testing"
	"time"

	"github.com/quicproquo/qpq/mesh/testkit"
)

func TestChannelMessageReachesMembersAndLateJoiners(t *testing.T) {
	ns := lineOf(t, 3)
	alice, bob, carol := newUser(t), newUser(t), newUser(t)
	code, share, errOut := runQPQ(t, userEnv, "channel", "new", "town", "--home", alice.home)
	share = strings.TrimSpace(share)
	if code != 0 || strings.Count(share, "\n") != 0 || !strings.HasPrefix(share, "qpqch1:town:") {
		t.Fatalf("channel new: exit %d, stdout %q, stderr %q", code, share, errOut)
	}
	if code, _, e := runQPQ(t, userEnv, "channel", "join", share, "--home", bob.home); code != 0 {
		t.Fatal(e)
	}
	code, out, _ := runQPQ(t, userEnv, "channel", "list", "--json", "--home", bob.home)
	if code != 0 || !strings.Contains(out, `"name":"town"`) {
		t.Fatalf("channel list: %q", out)
	}
	code, idOut, e := runQPQ(t, userEnv, "send", "--home", alice.home, "--node", ns[0].peerArg(), "--channel", "town", "--text", "water at the school, 18:00")
	if code != 0 {
		t.Fatalf("send --channel: %s", e)
	}
	id := strings.TrimSpace(idOut)
	testkit.WaitForEvery(t, 20*time.Second, procPoll, "the broadcast to reach C", func() bool { return ns[2].kind("broadcast") == 1 })

	msgs := recvAll(t, bob, ns[2])
	if len(msgs) != 1 || msgs[0].Kind != "broadcast" || msgs[0].Channel != "town" || msgs[0].ID != id ||
		msgs[0].From != alice.fp || msgs[0].Text != "water at the school, 18:00" {
		t.Fatalf("bob got %+v", msgs)
	}
	if again := recvAll(t, bob, ns[2]); len(again) != 0 {
		t.Fatalf("shown twice: %+v", again)
	}
	// A member who joins later still gets the stored message, under a name
	// of their choosing.
	runQPQ(t, userEnv, "channel", "join", share, "--name", "mytown", "--home", carol.home)
	msgs = recvAll(t, carol, ns[1])
	if len(msgs) != 1 || msgs[0].Channel != "mytown" || msgs[0].ID != id {
		t.Fatalf("late joiner got %+v", msgs)
	}
	// Without the key, nothing: alice's DM mailbox shows no broadcast.
	outsider := newUser(t)
	if msgs := recvAll(t, outsider, ns[2]); len(msgs) != 0 {
		t.Fatalf("non-member got %+v", msgs)
	}
}

func TestChannelHopLimitBoundsTheSpread(t *testing.T) {
	ns := lineOf(t, 4)
	alice := newUser(t)
	runQPQ(t, userEnv, "channel", "new", "near", "--home", alice.home)
	if code, _, e := runQPQ(t, userEnv, "send", "--home", alice.home, "--node", ns[0].peerArg(), "--channel", "near", "--hops", "1", "--text", "one hop"); code != 0 {
		t.Fatal(e)
	}
	testkit.WaitForEvery(t, 20*time.Second, procPoll, "B to have it", func() bool { return ns[1].kind("broadcast") == 1 })
	time.Sleep(2 * time.Second)
	if ns[2].kind("broadcast") != 0 || ns[3].kind("broadcast") != 0 {
		t.Fatalf("a one-hop broadcast travelled further: C %d, D %d", ns[2].kind("broadcast"), ns[3].kind("broadcast"))
	}
}
