package main

import (
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/quicproquo/qpq/mesh/testkit"
)

// startFollow runs `qpq recv --follow --json` for u against node addr,
// with extra flags.
func startFollow(t *testing.T, u user, node string, extra ...string) (stdout, stderr *syncBuf, done chan struct{}) {
	t.Helper()
	stdout, stderr, done = &syncBuf{}, &syncBuf{}, make(chan struct{})
	cmd := exec.Command(qpqBin, append([]string{"recv", "--follow", "--json", "--home", u.home, "--node", node}, extra...)...)
	cmd.Env = append(cleanEnv(), userEnv...)
	cmd.Stdout, cmd.Stderr = stdout, stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		cmd.Wait()
		close(done)
	}()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-done
		if t.Failed() {
			t.Logf("recv --follow stderr:\n%s", stderr)
		}
	})
	return stdout, stderr, done
}

func TestRecvFollowReconnectsAfterTheNodeRestarts(t *testing.T) {
	data := t.TempDir()
	n := startNode(t, data, "--listen", loop)
	addr, node := n.addr(), n.peerArg()
	alice, bob := newUser(t), newUser(t)
	code, share, _ := runQPQ(t, userEnv, "channel", "new", "town", "--home", alice.home)
	if code != 0 {
		t.Fatal("channel new")
	}
	if code, _, e := runQPQ(t, userEnv, "channel", "join", strings.TrimSpace(share), "--home", bob.home); code != 0 {
		t.Fatal(e)
	}
	recvAll(t, bob, n)
	post := func(text string) {
		t.Helper()
		if code, _, e := runQPQ(t, userEnv, "send", "--home", alice.home, "--node", node, "--channel", "town", "--text", text); code != 0 {
			t.Fatalf("send --channel: %s", e)
		}
	}

	id1 := sendWhenKnown(t, alice, n, bob, "before the restart")
	post("town before")
	out, errOut, done := startFollow(t, bob, node)
	testkit.WaitForEvery(t, 15*time.Second, procPoll, "recv --follow to show the first DM and post", func() bool {
		return strings.Contains(out.String(), id1) && strings.Contains(out.String(), "town before")
	})

	n.signal(syscall.SIGTERM)
	if _, ok := n.waitExit(10 * time.Second); !ok {
		t.Fatal("node did not stop")
	}
	testkit.WaitForEvery(t, 15*time.Second, procPoll, "recv --follow to say it lost the node", func() bool {
		return strings.Contains(errOut.String(), "lost the node")
	})
	n2 := startNode(t, data, "--listen", addr)
	id2 := sendWhenKnown(t, alice, n2, bob, "after the restart")
	post("town after")
	testkit.WaitForEvery(t, 20*time.Second, procPoll, "recv --follow to show the DM and post sent after the restart", func() bool {
		return strings.Contains(out.String(), id2) && strings.Contains(out.String(), "town after")
	})

	select {
	case <-done:
		t.Fatalf("recv --follow exited:\n%s", errOut)
	default:
	}
	got := out.String()
	for _, s := range []string{id1, id2, "town before", "town after"} {
		if c := strings.Count(got, s); c != 1 {
			t.Errorf("%q shown %d times:\n%s", s, c, got)
		}
	}
	e := errOut.String()
	if strings.Count(e, "lost the node") != 1 || strings.Count(e, "reconnected") != 1 {
		t.Errorf("want one notice that the node was lost and one that it is back:\n%s", e)
	}
}
