package main

import (
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/quicproquo/qpq/node/display"
)

// forged is what a sender who knows bob's fingerprint sends to make bob's
// terminal show a line from "alice", then restyle and reorder the screen.
const forged = "hi\n2026-12-02 00:59  alice: please reply with the door code\x1b[2K\x1b]0;t\x07\u202e\r"

// headers returns the lines of recv's output that start a message (every
// other line is indented under one).
func headers(out string) []string {
	var hs []string
	for _, line := range strings.Split(strings.TrimSuffix(out, "\n"), "\n") {
		if line != "" && !strings.HasPrefix(line, display.Indent) {
			hs = append(hs, line)
		}
	}
	return hs
}

func TestRecvShowsAForgedLineInsideItsOwnMessage(t *testing.T) {
	n := startNode(t, "", "--listen", loop)
	alice, bob := newUser(t), newUser(t)
	recvAll(t, bob, n) // publishes bob's bundle
	sendWhenKnown(t, alice, n, bob, forged)
	code, out, errOut := runQPQ(t, userEnv, "recv", "--home", bob.home, "--node", n.peerArg())
	if code != 0 {
		t.Fatalf("recv: exit %d %s", code, errOut)
	}
	hs := headers(out)
	if len(hs) != 1 {
		t.Fatalf("one message printed as %d message headers:\n%s", len(hs), out)
	}
	if !strings.Contains(hs[0], display.NotContact) {
		t.Errorf("a stranger's message is not marked %q: %q", display.NotContact, hs[0])
	}
	for _, bad := range []string{"\x1b", "\x07", "\r", "\u202e"} {
		if strings.Contains(out, bad) {
			t.Errorf("recv printed %q raw:\n%q", bad, out)
		}
	}
	for _, want := range []string{`\x1b[2K`, `\x07`, `\u202e`, `\r`, display.Indent + "2026-12-02 00:59  alice: please reply"} {
		if !strings.Contains(out, want) {
			t.Errorf("recv output lacks %q:\n%s", want, out)
		}
	}

	// Once alice is a contact her name is shown, unmarked; JSON keeps the
	// exact text.
	if code, _, e := runQPQ(t, userEnv, "contact", "add", alice.fp, "alice", "--home", bob.home); code != 0 {
		t.Fatalf("contact add: %s", e)
	}
	sendWhenKnown(t, alice, n, bob, "plain")
	code, out, _ = runQPQ(t, userEnv, "recv", "--home", bob.home, "--node", n.peerArg())
	if hs := headers(out); code != 0 || len(hs) != 1 || !strings.HasSuffix(hs[0], "  alice: plain") {
		t.Fatalf("contact's message: exit %d %q", code, out)
	}
	sendWhenKnown(t, alice, n, bob, forged)
	if msgs := recvAll(t, bob, n); len(msgs) != 1 || msgs[0].Text != forged {
		t.Fatalf("--json changed the text: %+v", msgs)
	}
}

func TestRecvSaysWhyNothingIsShownTheSecondTime(t *testing.T) {
	n := startNode(t, "", "--listen", loop)
	alice, bob := newUser(t), newUser(t)
	recvAll(t, bob, n)
	sendWhenKnown(t, alice, n, bob, "once")
	if code, out, _ := runQPQ(t, userEnv, "recv", "--home", bob.home, "--node", n.peerArg()); code != 0 || !strings.Contains(out, "once") {
		t.Fatalf("first recv: %d %q", code, out)
	}
	code, out, errOut := runQPQ(t, userEnv, "recv", "--home", bob.home, "--node", n.peerArg(), "--json")
	if code != 0 || out != "" || !strings.Contains(errOut, "deleted from the node once shown") {
		t.Fatalf("second recv: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
}

func TestRecvFromASilentAddressSaysNoNodeAnswered(t *testing.T) {
	t.Parallel() // waits out the QUIC handshake timeout
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := pc.LocalAddr().String()
	pc.Close() // nothing listens there now
	bob := newUser(t)
	start := time.Now()
	code, _, errOut := runQPQ(t, userEnv, "recv", "--home", bob.home, "--node", addr)
	if code != 1 {
		t.Fatalf("exit %d after %v: %s", code, time.Since(start), errOut)
	}
	for _, want := range []string{"connecting to node " + addr, "no qpq node answered at " + addr, "`qpq node` is running", "firewall"} {
		if !strings.Contains(errOut, want) {
			t.Errorf("stderr lacks %q:\n%s", want, errOut)
		}
	}
}

func TestSendToAFullNodeSaysItIsFullForThisSender(t *testing.T) {
	// 1 MiB store: one client address may hold 64 KiB, four 16 KiB DMs.
	n := startNode(t, "", "--listen", loop, "--store-max-bytes", "1M")
	alice, bob := newUser(t), newUser(t)
	recvAll(t, bob, n)
	big := strings.Repeat("x", 16<<10)
	sendWhenKnown(t, alice, n, bob, big)
	for i := 0; i < 10; i++ {
		code, _, errOut := runQPQ(t, userEnv, "send", "--home", alice.home, "--node", n.peerArg(), "--to", bob.fp, "--text", fmt.Sprint(i, big[1:]))
		if code == 0 {
			continue
		}
		if code != 1 || !strings.Contains(errOut, "full for this sender") || !strings.Contains(errOut, "retry later or use another node") {
			t.Fatalf("refused send: exit %d %q", code, errOut)
		}
		return
	}
	t.Fatal("the node never refused a sender past its quota")
}
