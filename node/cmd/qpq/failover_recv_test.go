package main

import (
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/quicproquo/qpq/mesh/testkit"
)

// recv --follow is given two linked nodes; the first is killed and never
// comes back. The follower moves to the second, opens the mailbox there,
// and shows the DM sent during the outage once and the earlier one not
// again.
func TestFailoverRecvFollowMovesToTheNextNode(t *testing.T) {
	ns := lineOf(t, 2)
	n1, n2 := ns[0], ns[1]
	alice, bob := newUser(t), newUser(t)
	recvAll(t, bob, n1) // publishes bob's bundle
	id1 := sendWhenKnown(t, alice, n1, bob, "before the outage")
	testkit.WaitForEvery(t, 15*time.Second, procPoll, "the first DM to reach node 2", func() bool { return n2.kind("dm") == 1 })

	out, errOut, done := &syncBuf{}, &syncBuf{}, make(chan struct{})
	cmd := exec.Command(qpqBin, "recv", "--follow", "--json", "--home", bob.home, "--node", n1.peerArg()+","+n2.peerArg())
	cmd.Env = append(cleanEnv(), userEnv...)
	cmd.Stdout, cmd.Stderr = out, errOut
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-done
		if t.Failed() {
			t.Logf("recv --follow stderr:\n%s", errOut)
		}
	})
	testkit.WaitForEvery(t, 15*time.Second, procPoll, "recv --follow to show the first DM", func() bool { return strings.Contains(out.String(), id1) })

	addr1, addr2 := n1.addr(), n2.addr()
	n1.signal(syscall.SIGKILL)
	if _, ok := n1.waitExit(10 * time.Second); !ok {
		t.Fatal("node 1 did not die")
	}
	id2 := sendWhenKnown(t, alice, n2, bob, "during the outage")
	testkit.WaitForEvery(t, 40*time.Second, procPoll, "recv --follow to move to node 2 and show the DM sent during the outage", func() bool {
		return strings.Contains(out.String(), id2)
	})
	// The follower acknowledged both at node 2, which deletes them.
	testkit.WaitForEvery(t, 10*time.Second, procPoll, "node 2 to delete the DMs read", func() bool { return n2.kind("dm") == 0 })
	select {
	case <-done:
		t.Fatalf("recv --follow exited:\n%s", errOut)
	default:
	}
	got := out.String()
	for _, id := range []string{id1, id2} {
		if c := strings.Count(got, id); c != 1 {
			t.Errorf("DM %s shown %d times:\n%s", id[:8], c, got)
		}
	}
	e := errOut.String()
	if strings.Count(e, "lost the node at "+addr1) != 1 || strings.Count(e, "moved from the node at ") != 1 || !strings.Contains(e, "reconnected to the node at "+addr2) {
		t.Errorf("want one notice of the loss, one of the move to node 2:\n%s", e)
	}
}
