package main

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestSendRefusesOversizeBody(t *testing.T) {
	n := startNode(t, "", "--listen", loop)
	alice, bob := newUser(t), newUser(t)
	recvAll(t, bob, n)
	big := strings.Repeat("x", 16<<10+1)
	code, _, errOut := runQPQ(t, userEnv, "send", "--home", alice.home, "--node", n.peerArg(), "--to", bob.fp, "--text", big)
	if code != 1 || !strings.Contains(errOut, "16 KiB") {
		t.Fatalf("oversize body: exit %d, stderr %q", code, errOut)
	}
	// Exactly 16 KiB is fine.
	code, _, errOut = runQPQ(t, userEnv, "send", "--home", alice.home, "--node", n.peerArg(), "--to", bob.fp, "--text", big[1:])
	if code != 0 {
		t.Fatalf("16 KiB body: exit %d %s", code, errOut)
	}
}

func TestPassphraseProtectsTheKeyFile(t *testing.T) {
	home := t.TempDir()
	if code, _, errOut := runQPQ(t, []string{"QPQ_PASSPHRASE=correct horse"}, "id", "new", "--home", home); code != 0 {
		t.Fatalf("id new: %s", errOut)
	}
	key := filepath.Join(home, "user.key")
	before, _ := os.ReadFile(key)
	if strings.Contains(string(before), "correct horse") {
		t.Fatal("passphrase stored in the key file")
	}
	n := startNode(t, "", "--listen", loop)
	code, _, errOut := runQPQ(t, []string{"QPQ_PASSPHRASE=wrong"}, "recv", "--home", home, "--node", n.peerArg())
	if code != 1 || !strings.Contains(errOut, "wrong passphrase") {
		t.Fatalf("wrong passphrase: exit %d %q", code, errOut)
	}
	after, _ := os.ReadFile(key)
	if string(before) != string(after) {
		t.Fatal("a wrong passphrase changed the key file")
	}
	// No passphrase and no terminal: a clear error, never a hang.
	code, _, errOut = runQPQ(t, nil, "recv", "--home", home, "--node", n.peerArg())
	if code != 1 || !strings.Contains(errOut, "QPQ_PASSPHRASE") {
		t.Fatalf("no passphrase: exit %d %q", code, errOut)
	}
	if code, _, errOut := runQPQ(t, []string{"QPQ_PASSPHRASE=correct horse"}, "recv", "--home", home, "--node", n.peerArg()); code != 0 {
		t.Fatalf("right passphrase: %s", errOut)
	}
	// id new refuses to replace an identity.
	if code, _, errOut := runQPQ(t, userEnv, "id", "new", "--home", home); code != 1 || !strings.Contains(errOut, "refusing") {
		t.Fatalf("second id new: exit %d %q", code, errOut)
	}
}

func TestNodeTrustedOnFirstUseAndChangedKeyRefused(t *testing.T) {
	data := t.TempDir()
	n := startNode(t, data, "--listen", loop)
	addr := n.addr()
	bob := newUser(t)
	code, _, errOut := runQPQ(t, userEnv, "recv", "--home", bob.home, "--node", addr)
	if code != 0 || !strings.Contains(errOut, "trusting node") {
		t.Fatalf("first use: exit %d %q", code, errOut)
	}
	// The node is replaced by one with another key on the same address.
	n.signal(syscall.SIGTERM)
	n.waitExit(5 * time.Second)
	startNode(t, "", "--listen", addr)
	code, _, errOut = runQPQ(t, userEnv, "recv", "--home", bob.home, "--node", addr)
	if code != 1 || !strings.Contains(errOut, "--repin") {
		t.Fatalf("changed node key: exit %d %q", code, errOut)
	}
	if code, _, errOut = runQPQ(t, userEnv, "recv", "--home", bob.home, "--node", addr, "--repin"); code != 0 {
		t.Fatalf("--repin: exit %d %q", code, errOut)
	}
	if code, _, _ = runQPQ(t, userEnv, "recv", "--home", bob.home, "--node", addr); code != 0 {
		t.Fatal("the new key was not remembered after --repin")
	}
}

func TestClientCommandsNeedANode(t *testing.T) {
	bob := newUser(t)
	// mDNS off: this test runs outside a namespace of its own, so it must
	// not browse the host's links.
	for _, args := range [][]string{{"recv", "--home", bob.home, "--mdns=false"}, {"send", "--home", bob.home, "--mdns=false", "--to", bob.fp, "--text", "x"}} {
		code, _, errOut := runQPQ(t, userEnv, args...)
		if code != 2 || !strings.Contains(errOut, "no node given (--node or QPQ_NODE) and mDNS is off") {
			t.Errorf("qpq %v without a node: exit %d %q", args, code, errOut)
		}
	}
	code, _, errOut := runQPQ(t, append(userEnv, "QPQ_MDNS=false"), "send", "--home", bob.home, "--to", bob.fp, "--text", "x")
	if code != 2 || !strings.Contains(errOut, "mDNS is off (--mdns=false or QPQ_MDNS=false)") {
		t.Errorf("send with QPQ_MDNS=false and no node: exit %d %q", code, errOut)
	}
	code, _, errOut = runQPQ(t, userEnv, "send", "--home", bob.home, "--node", "127.0.0.1:port", "--to", bob.fp, "--text", "x")
	if code != 2 || !strings.Contains(errOut, `"127.0.0.1:port"`) {
		t.Errorf("send --node 127.0.0.1:port: exit %d %q", code, errOut)
	}
	if list := outboxList(t, bob); len(list) != 0 {
		t.Errorf("a send refused for its node wrote the outbox: %+v", list)
	}
}

func TestContactsAndPrefixes(t *testing.T) {
	alice, bob, carol := newUser(t), newUser(t), newUser(t)
	if code, _, e := runQPQ(t, userEnv, "contact", "add", bob.fp, "bob", "--home", alice.home); code != 0 {
		t.Fatal(e)
	}
	runQPQ(t, userEnv, "contact", "add", carol.fp, "carol", "--home", alice.home)
	code, out, _ := runQPQ(t, userEnv, "contact", "list", "--json", "--home", alice.home)
	if code != 0 || strings.Count(out, "\n") != 2 || !strings.Contains(out, `"name":"bob"`) {
		t.Fatalf("contact list: %q", out)
	}
	if code, _, e := runQPQ(t, userEnv, "contact", "add", "notafingerprint", "x", "--home", alice.home); code != 2 {
		t.Fatalf("bad fingerprint: exit %d %q", code, e)
	}
	// An unknown prefix is refused before any network use.
	code, _, errOut := runQPQ(t, userEnv, "send", "--home", alice.home, "--node", "127.0.0.1:9", "--to", "zzzz", "--text", "x")
	if code != 2 || !strings.Contains(errOut, "unknown recipient") {
		t.Fatalf("unknown prefix: exit %d %q", code, errOut)
	}
}
