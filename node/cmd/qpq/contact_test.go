package main

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/quicproquo/qpq/mesh/identity"
	"github.com/quicproquo/qpq/mesh/testkit"
	"github.com/quicproquo/qpq/node/safety"
)

func mustFP(t *testing.T, s string) identity.Fingerprint {
	t.Helper()
	fp, err := identity.ParseFingerprint(s)
	if err != nil {
		t.Fatalf("fingerprint %q: %v", s, err)
	}
	return fp
}

func qpqOK(t *testing.T, args ...string) string {
	t.Helper()
	code, out, errOut := runQPQ(t, userEnv, args...)
	if code != 0 {
		t.Fatalf("qpq %s: exit %d\n%s%s", strings.Join(args, " "), code, out, errOut)
	}
	return out
}

// contactList returns `qpq contact list --json` by name.
func contactList(t *testing.T, u user) map[string]contactListJSON {
	t.Helper()
	m := map[string]contactListJSON{}
	for _, line := range strings.Split(strings.TrimSpace(qpqOK(t, "contact", "list", "--json", "--home", u.home)), "\n") {
		if line == "" {
			continue
		}
		var c contactListJSON
		if err := json.Unmarshal([]byte(line), &c); err != nil {
			t.Fatalf("contact list printed %q: %v", line, err)
		}
		m[c.Name] = c
	}
	return m
}

func TestContactIdentityChangeWarnsAndSendWaitsForAccept(t *testing.T) {
	n := startNode(t, "", "--listen", loop)
	alice, bob := newUser(t), newUser(t)
	recvAll(t, bob, n) // the old identity stays known to the mesh
	qpqOK(t, "contact", "add", bob.fp, "bob", "--home", alice.home)
	qpqOK(t, "contact", "verify", "bob", "ok", "--home", alice.home)

	// Bob re-creates his identity and shares it (the text of his QR code).
	newBob := newUser(t)
	recvAll(t, newBob, n) // publishes the new bundle
	share := "qpq:user/" + newBob.fp
	code, out, errOut := runQPQ(t, userEnv, "contact", "add", share, "bob", "--home", alice.home)
	if code != 1 {
		t.Fatalf("contact add with bob's new identity: exit %d, want 1\n%s%s", code, out, errOut)
	}
	a := mustFP(t, alice.fp)
	oldNum, newNum := safety.Number(a, mustFP(t, bob.fp)), safety.Number(a, mustFP(t, newBob.fp))
	for _, want := range []string{"WARNING", "identity of contact bob changed", bob.fp, newBob.fp, oldNum, newNum, "qpq contact accept bob", "qpq contact verify bob"} {
		if !strings.Contains(errOut, want) {
			t.Errorf("the warning lacks %q:\n%s", want, errOut)
		}
	}
	// Nothing was replaced; the change is listed.
	c := contactList(t, alice)["bob"]
	if c.Fingerprint != bob.fp || c.Changed != newBob.fp || !c.Verified || c.ChangedSafety != newNum {
		t.Fatalf("bob after the warning: %+v", c)
	}
	if out := qpqOK(t, "contact", "list", "--home", alice.home); !strings.Contains(out, "IDENTITY CHANGED to "+newBob.fp) {
		t.Fatalf("contact list does not show the change:\n%s", out)
	}

	// send refuses, saying what happened and how to accept; the node gets nothing.
	code, _, errOut = runQPQ(t, userEnv, "send", "--home", alice.home, "--node", n.peerArg(), "--to", "bob", "--text", "secret")
	if code != 1 || !strings.Contains(errOut, "identity of contact \"bob\" changed") || !strings.Contains(errOut, "qpq contact accept bob") {
		t.Fatalf("send to bob with a pending change: exit %d\n%s", code, errOut)
	}
	if k := n.kind("dm"); k != 0 {
		t.Fatalf("the node holds %d DMs after a refused send", k)
	}

	out = qpqOK(t, "contact", "accept", "bob", "--home", alice.home)
	if !strings.Contains(out, newBob.fp) || !strings.Contains(out, "not verified") {
		t.Fatalf("accept printed %q", out)
	}
	if c := contactList(t, alice)["bob"]; c.Fingerprint != newBob.fp || c.Changed != "" || c.Verified {
		t.Fatalf("bob after accept: %+v", c)
	}
	var id string
	testkit.WaitForEvery(t, 30*time.Second, procPoll, "send to bob's new identity", func() bool {
		code, out, _ := runQPQ(t, userEnv, "send", "--home", alice.home, "--node", n.peerArg(), "--to", "bob", "--text", "hello new bob")
		id = strings.TrimSpace(out)
		return code == 0
	})
	if msgs := recvAll(t, newBob, n); len(msgs) != 1 || msgs[0].ID != id || msgs[0].Text != "hello new bob" {
		t.Fatalf("new bob got %+v", msgs)
	}
}

func TestSafetyNumberIsTheSameForBothUsers(t *testing.T) {
	alice, bob := newUser(t), newUser(t)
	qpqOK(t, "contact", "add", bob.fp, "bob", "--home", alice.home)
	qpqOK(t, "contact", "add", "qpq:user/"+alice.fp, "alice", "--home", bob.home)
	var va, vb contactVerifyJSON
	json.Unmarshal([]byte(qpqOK(t, "contact", "verify", "bob", "--json", "--home", alice.home)), &va)
	json.Unmarshal([]byte(qpqOK(t, "contact", "verify", "alice", "--json", "--home", bob.home)), &vb)
	if va.SafetyNumber == "" || va.SafetyNumber != vb.SafetyNumber || va.QR != vb.QR || va.Verified {
		t.Fatalf("alice sees %+v, bob sees %+v; want the same safety number, not yet verified", va, vb)
	}
	if len(strings.ReplaceAll(va.SafetyNumber, " ", "")) != safety.Digits {
		t.Fatalf("safety number %q", va.SafetyNumber)
	}
	// The text form shows the same digits (3 lines of 4 groups) and a QR code.
	out := qpqOK(t, "contact", "verify", "bob", "--home", alice.home)
	g := strings.Fields(va.SafetyNumber)
	for _, line := range []string{strings.Join(g[0:4], " "), strings.Join(g[4:8], " "), strings.Join(g[8:], " "), "█", "not verified"} {
		if !strings.Contains(out, line) {
			t.Errorf("verify output lacks %q:\n%s", line, out)
		}
	}
	if out := qpqOK(t, "contact", "verify", "bob", "ok", "--home", alice.home, "--qr=false"); !strings.Contains(out, "bob is verified") || strings.Contains(out, "█") {
		t.Fatalf("verify ok printed:\n%s", out)
	}
	if !contactList(t, alice)["bob"].Verified || contactList(t, bob)["alice"].Verified {
		t.Fatal("verify ok marked the wrong side")
	}
}

func TestBlockedSenderIsNotShownButAcknowledged(t *testing.T) {
	n := startNode(t, "", "--listen", loop)
	alice, carol, bob := newUser(t), newUser(t), newUser(t)
	recvAll(t, bob, n)
	qpqOK(t, "contact", "add", alice.fp, "alice", "--home", bob.home)
	qpqOK(t, "contact", "block", "alice", "--home", bob.home)
	if !contactList(t, bob)["alice"].Blocked {
		t.Fatal("alice is not listed as blocked")
	}
	sendWhenKnown(t, alice, n, bob, "from blocked alice")
	sendWhenKnown(t, carol, n, bob, "from carol")
	testkit.WaitForEvery(t, 10*time.Second, procPoll, "both DMs at the node", func() bool { return n.kind("dm") == 2 })

	code, out, errOut := runQPQ(t, userEnv, "recv", "--home", bob.home, "--node", n.peerArg())
	if code != 0 || strings.Contains(out, "blocked alice") || !strings.Contains(out, "from carol") {
		t.Fatalf("recv: exit %d\n%s%s", code, out, errOut)
	}
	// Both were acknowledged: the node deletes them, a second recv finds nothing.
	testkit.WaitForEvery(t, 10*time.Second, procPoll, "the node to drop both DMs", func() bool { return n.kind("dm") == 0 })
	if msgs := recvAll(t, bob, n); len(msgs) != 0 {
		t.Fatalf("second recv: %+v", msgs)
	}

	// Her posts in a channel bob joined are not shown either.
	share := strings.TrimSpace(qpqOK(t, "channel", "new", "town", "--home", alice.home))
	qpqOK(t, "channel", "join", share, "--home", bob.home)
	qpqOK(t, "channel", "join", share, "--home", carol.home)
	qpqOK(t, "send", "--home", alice.home, "--node", n.peerArg(), "--channel", "town", "--text", "alice in town")
	qpqOK(t, "send", "--home", carol.home, "--node", n.peerArg(), "--channel", "town", "--text", "carol in town")
	if msgs := recvAll(t, bob, n); len(msgs) != 1 || msgs[0].Text != "carol in town" {
		t.Fatalf("channel messages shown to bob: %+v, want only carol's", msgs)
	}

	// Unblocked, alice is shown again.
	qpqOK(t, "contact", "unblock", "alice", "--home", bob.home)
	sendWhenKnown(t, alice, n, bob, "alice again")
	if msgs := recvAll(t, bob, n); len(msgs) != 1 || msgs[0].Text != "alice again" {
		t.Fatalf("after unblock: %+v", msgs)
	}
}

func TestContactRenameRemoveAndBlockByFingerprint(t *testing.T) {
	alice, bob, carol := newUser(t), newUser(t), newUser(t)
	qpqOK(t, "contact", "add", bob.fp, "bob", "--home", alice.home)
	qpqOK(t, "contact", "add", carol.fp, "carol", "--home", alice.home)
	if code, _, e := runQPQ(t, userEnv, "contact", "rename", "bob", "carol", "--home", alice.home); code != 1 || !strings.Contains(e, "carol") {
		t.Fatalf("rename onto a taken name: %d %s", code, e)
	}
	qpqOK(t, "contact", "rename", "bob", "robert", "--home", alice.home)
	// The fingerprint under a second name is refused, never a silent rename.
	if code, _, e := runQPQ(t, userEnv, "contact", "add", bob.fp, "bobby", "--home", alice.home); code != 1 || !strings.Contains(e, `already the contact "robert"`) {
		t.Fatalf("add a known fingerprint as bobby: %d %s", code, e)
	}
	qpqOK(t, "contact", "remove", "carol", "--home", alice.home)
	if code, _, e := runQPQ(t, userEnv, "contact", "remove", "carol", "--home", alice.home); code != 1 || !strings.Contains(e, "no such contact") {
		t.Fatalf("remove twice: %d %s", code, e)
	}
	qpqOK(t, "contact", "block", carol.fp, "--home", alice.home)
	cs := contactList(t, alice)
	if len(cs) != 2 || cs["robert"].Fingerprint != bob.fp || !cs[carol.fp[:8]].Blocked {
		t.Fatalf("contacts: %+v", cs)
	}
}

func TestNodeIDQR(t *testing.T) {
	data := t.TempDir()
	out := qpqOK(t, "node", "id", "--data", data, "--create", "--qr")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) < 12 || !strings.HasPrefix(lines[0], "fingerprint  ") || !strings.Contains(out, "█") {
		t.Fatalf("node id --qr printed:\n%s", out)
	}
	out = qpqOK(t, "node", "id", "--data", data, "--json", "--qr")
	var id idJSON
	if err := json.Unmarshal([]byte(strings.SplitN(out, "\n", 2)[0]), &id); err != nil || !strings.HasPrefix(lines[0], "fingerprint  "+id.Fingerprint) {
		t.Fatalf("node id --json --qr: %v\n%s", err, out)
	}
	if out := qpqOK(t, "node", "id", "--data", data); strings.Contains(out, "█") {
		t.Fatalf("node id without --qr printed a QR code:\n%s", out)
	}
}

func TestContactVerifyOkAcceptsAChangedIdentity(t *testing.T) {
	alice, bob, newBob := newUser(t), newUser(t), newUser(t)
	qpqOK(t, "contact", "add", bob.fp, "bob", "--home", alice.home)
	if code, _, _ := runQPQ(t, userEnv, "contact", "add", newBob.fp, "bob", "--home", alice.home); code != 1 {
		t.Fatalf("contact add with a new identity: exit %d", code)
	}
	// verify shows the number to compare: the one with the new identity.
	code, out, errOut := runQPQ(t, userEnv, "contact", "verify", "bob", "--home", alice.home, "--qr=false")
	newNum := safety.Lines(mustFP(t, alice.fp), mustFP(t, newBob.fp))[0]
	if code != 0 || !strings.Contains(out, newNum) || !strings.Contains(errOut, "changed from "+bob.fp+" to "+newBob.fp) {
		t.Fatalf("verify with a pending change: exit %d\n%s%s", code, out, errOut)
	}
	if c := contactList(t, alice)["bob"]; c.Fingerprint != bob.fp {
		t.Fatalf("verify without ok changed bob: %+v", c)
	}
	code, out, errOut = runQPQ(t, userEnv, "contact", "verify", "bob", "ok", "--home", alice.home, "--qr=false")
	if code != 0 || !strings.Contains(errOut, "accepted the new identity of bob") || !strings.Contains(out, "bob is verified") {
		t.Fatalf("verify ok: exit %d\n%s%s", code, out, errOut)
	}
	if c := contactList(t, alice)["bob"]; c.Fingerprint != newBob.fp || !c.Verified || c.Changed != "" {
		t.Fatalf("bob after verify ok: %+v", c)
	}
}
