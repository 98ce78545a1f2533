package main

import (
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/quicproquo/qpq/mesh/testkit"
)

// Without --node or QPQ_NODE, recv finds the nodes on its links by mDNS:
// a never-used node is refused without a terminal unless --trust-new,
// then remembered and used; a DM sent at another node reaches it. With no
// link at all it exits 2 saying that no node was given or found.
func TestDiscoverRecvFindsANodeByMDNS(t *testing.T) {
	r := needNetns(t)
	var ps []*proc
	for i := 1; i <= 2; i++ {
		ps = append(ps, startNodeIn(t, r.addNode(i), fmt.Sprintf("10.78.0.%d:7443", i)))
	}
	client := r.addNode(3) // a laptop on the same link, no node of its own
	alice, bob := newUser(t), newUser(t)

	// No terminal, no --trust-new: found, listed, not used.
	var errOut string
	testkit.WaitForEvery(t, 20*time.Second, procPoll, "recv to find both nodes by mDNS", func() bool {
		var code int
		code, _, errOut = runQPQIn(t, client, userEnv, "recv", "--home", bob.home)
		return code == 1 && strings.Contains(errOut, "found node 10.78.0.1:7443") && strings.Contains(errOut, "found node 10.78.0.2:7443")
	})
	if !strings.Contains(errOut, "not trusted yet") || !strings.Contains(errOut, "--trust-new") {
		t.Fatalf("recv used a node nobody confirmed, or did not say why not:\n%s", errOut)
	}
	if _, err := os.Stat(bob.home + "/known_nodes"); err == nil {
		t.Fatal("a refused node was remembered")
	}

	code, _, errOut := runQPQIn(t, client, userEnv, "recv", "--home", bob.home, "--trust-new")
	if code != 0 || !strings.Contains(errOut, "found by mDNS on first use (--trust-new)") {
		t.Fatalf("recv --trust-new: exit %d\n%s", code, errOut)
	}
	known, err := os.ReadFile(bob.home + "/known_nodes")
	if err != nil || strings.Count(string(known), "\n") != 1 {
		t.Fatalf("known_nodes after --trust-new: %q %v; want the one node used", known, err)
	}

	id := sendWhenKnown(t, alice, ps[0], bob, "found you")
	for _, p := range ps {
		testkit.WaitForEvery(t, 20*time.Second, procPoll, "the DM to reach both nodes", func() bool { return p.kind("dm") == 1 })
	}
	// Now trusted: no flag needed; the remembered node comes first.
	code, out, errOut := runQPQIn(t, client, userEnv, "recv", "--home", bob.home, "--json")
	if code != 0 || !strings.Contains(out, id) || !strings.Contains(errOut, ", trusted") {
		t.Fatalf("recv found by mDNS: exit %d, stdout %q\n%s", code, out, errOut)
	}

	// send finds its node the same way, the trusted one first (alice used
	// node 1 above), even where an untrusted one answers faster.
	code, _, errOut = runQPQIn(t, client, userEnv, "send", "--home", alice.home, "--to", bob.fp, "--text", "sent by mDNS")
	if code != 0 || !strings.Contains(errOut, "found node 10.78.0.1:7443") || !strings.Contains(errOut, "stored") {
		t.Fatalf("send with the node found by mDNS: exit %d\n%s", code, errOut)
	}
	testkit.WaitForEvery(t, 20*time.Second, procPoll, "bob's recv to show the message sent by mDNS", func() bool {
		_, out, _ := runQPQIn(t, client, userEnv, "recv", "--home", bob.home, "--json")
		return strings.Contains(out, "sent by mDNS")
	})
	code, _, errOut = runQPQIn(t, client, userEnv, "send", "--home", bob.home, "--mdns=false", "--to", alice.fp, "--text", "x")
	if code != 2 || !strings.Contains(errOut, "mDNS is off") {
		t.Fatalf("send --mdns=false with no node: exit %d %q", code, errOut)
	}

	// A machine with no link: nothing to browse, nothing given.
	alone := r.prefix + "alone"
	r.ip("netns", "add", alone)
	r.nodes = append(r.nodes, alone)
	r.ip("-n", alone, "link", "set", "lo", "up")
	code, _, errOut = runQPQIn(t, alone, userEnv, "recv", "--home", bob.home)
	if want := "qpq recv: no node given (--node or QPQ_NODE) and none found by mDNS on this machine's links\n"; code != 2 || errOut != want {
		t.Fatalf("recv with no node and no link: exit %d %q, want 2 %q", code, errOut, want)
	}
}
