package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/quicproquo/qpq/gossip"
	"github.com/quicproquo/qpq/mesh/identity"
	"github.com/quicproquo/qpq/mesh/link"
	"github.com/quicproquo/qpq/node/client"
	"github.com/quicproquo/qpq/node/e2e"

	"github.com/quicproquo/qpq/mesh/testkit"

	"github.com/quicproquo/qpq/node/e2e/e2etest"
)

// userEnv makes key files unencrypted in tests (no terminal to prompt on).
var userEnv = []string{"QPQ_PASSPHRASE="}

// lineOf starts k nodes, each linked by --peer to the one before, and
// waits until every link is up. --max-links 1 keeps peer exchange from
// adding shortcuts, so the line stays a line.
func lineOf(t *testing.T, k int, args ...string) []*proc {
	t.Helper()
	ns := make([]*proc, k)
	for i := range ns {
		a := append([]string{"--listen", loop, "--max-links", "1"}, args...)
		if i > 0 {
			a = append(a, "--peer", ns[i-1].peerArg())
		}
		ns[i] = startNode(t, "", a...)
	}
	for i := 0; i+1 < k; i++ {
		a, b := ns[i], ns[i+1]
		afp, bfp := a.fp(), b.fp()
		testkit.WaitForEvery(t, 20*time.Second, procPoll, "line links", func() bool { return a.linkedTo(bfp) && b.linkedTo(afp) })
	}
	return ns
}

// kind returns how many envelopes of a kind the node holds.
func (p *proc) kind(k string) int {
	st, err := p.status()
	if err != nil {
		return -1
	}
	return st.Store.Kinds[k]
}

type user struct {
	home string
	fp   string
}

func newUser(t *testing.T) user {
	t.Helper()
	h := t.TempDir()
	code, out, errOut := runQPQ(t, userEnv, "id", "new", "--home", h, "--json")
	if code != 0 {
		t.Fatalf("id new: %d %s", code, errOut)
	}
	var id struct{ Fingerprint string }
	json.Unmarshal([]byte(out), &id)
	return user{home: h, fp: id.Fingerprint}
}

// recvAll runs `qpq recv --json` once and returns the messages.
func recvAll(t *testing.T, u user, node *proc) []recvJSON {
	t.Helper()
	code, out, errOut := runQPQIn(t, node.ns, userEnv, "recv", "--home", u.home, "--node", node.peerArg(), "--json")
	if code != 0 {
		t.Fatalf("recv: exit %d: %s", code, errOut)
	}
	var msgs []recvJSON
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		if line == "" {
			continue
		}
		var m recvJSON
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("recv printed %q: %v", line, err)
		}
		msgs = append(msgs, m)
	}
	return msgs
}

// sendWhenKnown sends once the recipient's bundle has reached the node.
func sendWhenKnown(t *testing.T, from user, node *proc, to user, text string, extra ...string) string {
	t.Helper()
	var id, errOut string
	testkit.WaitForEvery(t, 30*time.Second, procPoll, "the recipient's bundle to reach the sender's node", func() bool {
		args := append([]string{"send", "--home", from.home, "--node", node.peerArg(), "--to", to.fp, "--text", text}, extra...)
		code, out, e := runQPQIn(t, node.ns, userEnv, args...)
		id, errOut = strings.TrimSpace(out), e
		return code == 0
	})
	if len(id) != 64 {
		t.Fatalf("send printed %q (%s)", id, errOut)
	}
	return id
}

func TestDMAcrossLineOfFourExactlyOnce(t *testing.T) {
	ns := lineOf(t, 4)
	alice, bob := newUser(t), newUser(t)
	if msgs := recvAll(t, bob, ns[3]); len(msgs) != 0 { // publishes bob's bundle at D
		t.Fatalf("fresh mailbox: %v", msgs)
	}
	id := sendWhenKnown(t, alice, ns[0], bob, "across four hops")
	testkit.WaitForEvery(t, 20*time.Second, procPoll, "the DM to reach D", func() bool { return ns[3].kind("dm") == 1 })

	msgs := recvAll(t, bob, ns[3])
	if len(msgs) != 1 || msgs[0].ID != id || msgs[0].Text != "across four hops" || msgs[0].From != alice.fp || msgs[0].Kind != "dm" {
		t.Fatalf("bob at D got %+v, want the one DM %s from alice", msgs, id)
	}
	if _, err := time.Parse(time.RFC3339, msgs[0].SentAt); err != nil {
		t.Fatalf("sent_at %q: %v", msgs[0].SentAt, err)
	}
	if again := recvAll(t, bob, ns[3]); len(again) != 0 {
		t.Fatalf("second recv showed %d messages again", len(again))
	}
	// The receipt deletes every copy along the line.
	for i, n := range ns {
		testkit.WaitForEvery(t, 20*time.Second, procPoll, fmt.Sprintf("node %d to drop the delivered DM", i), func() bool { return n.kind("dm") == 0 })
	}

	// The recipient may attach anywhere: a second DM, fetched at C.
	id2 := sendWhenKnown(t, alice, ns[0], bob, "fetched at C")
	testkit.WaitForEvery(t, 20*time.Second, procPoll, "the DM to reach C", func() bool { return ns[2].kind("dm") == 1 })
	msgs = recvAll(t, bob, ns[2])
	if len(msgs) != 1 || msgs[0].ID != id2 {
		t.Fatalf("bob at C got %+v, want only %s", msgs, id2)
	}
	if again := recvAll(t, bob, ns[3]); len(again) != 0 {
		t.Fatalf("bob at D was shown %d messages already shown at C", len(again))
	}
}

func TestHopLimitStopsTheDM(t *testing.T) {
	ns := lineOf(t, 4)
	alice, bob := newUser(t), newUser(t)
	recvAll(t, bob, ns[3])
	// Direct: by onion the hops would count from the exit, not from A.
	sendWhenKnown(t, alice, ns[0], bob, "two hops only", "--hops", "2", "--route", "direct")
	testkit.WaitForEvery(t, 20*time.Second, procPoll, "the DM to reach C", func() bool { return ns[2].kind("dm") == 1 })
	// Give D every chance: C links to D, D's summary to C finds nothing to pull.
	time.Sleep(2 * time.Second)
	if n := ns[3].kind("dm"); n != 0 {
		t.Fatalf("D holds %d DMs; a DM with --hops 2 from A must stop at C", n)
	}
}

// dial connects to a node with the client library.
func dial(t *testing.T, local string, p *proc) *client.Client {
	t.Helper()
	fp, err := identity.ParseFingerprint(p.fp())
	if err != nil {
		t.Fatal(err)
	}
	c, err := client.DialFrom(t.Context(), local, p.addr(), fp)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func lookup(t *testing.T, c *client.Client, fp string) e2e.Bundle {
	t.Helper()
	f, _ := identity.ParseFingerprint(fp)
	var b e2e.Bundle
	testkit.WaitForEvery(t, 30*time.Second, procPoll, "bundle lookup", func() bool {
		var err error
		b, err = c.LookupBundle(t.Context(), f)
		return err == nil
	})
	return b
}

func TestKill9MiddleNodeDuringBurstLosesNothingAcknowledged(t *testing.T) {
	const burst = 1000
	ns := lineOf(t, 3, "--store-max-bytes", "64M")
	bob := newUser(t)
	recvAll(t, bob, ns[2])
	bAddr, bData := ns[1].addr(), ns[1].data
	c := dial(t, "127.0.0.1:0", ns[1])
	to := lookup(t, c, bob.fp)
	alice := e2e.NewUser()
	envs := make([]gossip.Envelope, burst)
	for i := range envs {
		envs[i] = e2etest.SealDM(t, alice, to, []byte(fmt.Sprintf("burst %d", i)))
	}

	var mu sync.Mutex
	var acked []string
	done := make(chan struct{})
	go func() {
		defer close(done)
		for _, e := range envs {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			_, err := c.Enqueue(ctx, e)
			cancel()
			if err != nil {
				return // the node died mid-burst
			}
			mu.Lock()
			acked = append(acked, e.ID.String())
			mu.Unlock()
		}
	}()
	testkit.WaitForEvery(t, 60*time.Second, procPoll, "a third of the burst", func() bool { mu.Lock(); defer mu.Unlock(); return len(acked) >= burst/3 })
	ns[1].cmd.Process.Signal(syscall.SIGKILL)
	<-done
	mu.Lock()
	want := append([]string(nil), acked...)
	mu.Unlock()
	t.Logf("node B acknowledged %d of %d before kill -9", len(want), burst)

	b2 := startNode(t, bData, "--listen", bAddr, "--peer", ns[0].peerArg(), "--store-max-bytes", "64M")
	st := b2.mustStatus()
	if int(st.Store.Kinds["dm"]) < len(want) {
		t.Fatalf("after restart B holds %d DMs, acknowledged %d", st.Store.Kinds["dm"], len(want))
	}
	got := map[string]bool{}
	testkit.WaitForEvery(t, 120*time.Second, procPoll, "every acknowledged DM to reach bob at C", func() bool {
		for _, m := range recvAll(t, bob, ns[2]) {
			got[m.ID] = true
		}
		for _, id := range want {
			if !got[id] {
				return false
			}
		}
		return true
	})
	// The store file is consistent.
	b2.signal(syscall.SIGTERM)
	if code, ok := b2.waitExit(5 * time.Second); !ok || code != 0 {
		t.Fatalf("B did not stop cleanly: %d %v", code, ok)
	}
	checkBolt(t, filepath.Join(bData, "store.db"))
}

func checkBolt(t *testing.T, path string) {
	t.Helper()
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, Timeout: 5 * time.Second})
	if err != nil {
		t.Fatalf("open %s: %v", path, err)
	}
	defer db.Close()
	err = db.View(func(tx *bolt.Tx) error {
		for err := range tx.Check() {
			return err
		}
		return nil
	})
	if err != nil {
		t.Fatalf("%s is inconsistent: %v", path, err)
	}
}

func TestRelayStoresHoldNoPlaintextNorSender(t *testing.T) {
	ns := lineOf(t, 3)
	bob := newUser(t)
	recvAll(t, bob, ns[2])
	c := dial(t, "127.0.0.1:0", ns[0])
	to := lookup(t, c, bob.fp)
	alice := e2e.NewUser()
	marker := "PLAINTEXT-MARKER-a7f3e9"
	// An anonymous enqueue: alice never authenticates or publishes here.
	if _, err := c.Enqueue(t.Context(), e2etest.SealDM(t, alice, to, []byte(marker))); err != nil {
		t.Fatal(err)
	}
	testkit.WaitForEvery(t, 20*time.Second, procPoll, "the DM to reach C", func() bool { return ns[2].kind("dm") == 1 })
	afp := alice.Fingerprint()
	needles := map[string][]byte{
		"plaintext":                []byte(marker),
		"sender fingerprint":       afp[:],
		"sender fingerprint (b32)": []byte(afp.String()),
		"sender public key":        alice.PublicKey(),
	}
	for _, n := range ns {
		raw, err := os.ReadFile(filepath.Join(n.data, "store.db"))
		if err != nil {
			t.Fatal(err)
		}
		for what, needle := range needles {
			if bytes.Contains(raw, needle) {
				t.Errorf("%s/store.db contains the %s", n.data, what)
			}
		}
	}
	if msgs := recvAll(t, bob, ns[2]); len(msgs) != 1 || msgs[0].Text != marker || msgs[0].From != afp.String() {
		t.Fatalf("bob got %+v", msgs)
	}
}

func TestOneClientCannotFillAMailboxAndAFullStoreKeepsWhatItHolds(t *testing.T) {
	// 1 MiB store: one client address may hold 64 KiB, one mailbox 256 KiB.
	n := startNode(t, "", "--listen", loop, "--store-max-bytes", "1M")
	bob := newUser(t)
	recvAll(t, bob, n)
	flood := dial(t, "127.0.0.1:0", n)
	to := lookup(t, flood, bob.fp)
	alice := e2e.NewUser()
	var accepted []string
	var refusal error
	for i := 0; i < 1000 && refusal == nil; i++ {
		e := e2etest.SealDM(t, alice, to, []byte(fmt.Sprintf("flood %d", i)))
		if _, refusal = flood.Enqueue(t.Context(), e); refusal == nil {
			accepted = append(accepted, e.ID.String())
		}
	}
	if refusal == nil || !strings.Contains(refusal.Error(), "quota") {
		t.Fatalf("a client sending without pause was never refused clearly (last error %v)", refusal)
	}
	t.Logf("one client: %d DMs accepted, then: %v", len(accepted), refusal)

	// Another client still reaches bob's mailbox.
	other := dial(t, "127.0.0.2:0", n)
	e := e2etest.SealDM(t, alice, to, []byte("from someone else"))
	if _, err := other.Enqueue(t.Context(), e); err != nil {
		t.Fatalf("bob's mailbox was filled by one client: %v", err)
	}
	accepted = append(accepted, e.ID.String())

	// Many clients fill the whole store: it refuses, clearly.
	var full error
	for ip := 3; ip < 60 && full == nil; ip++ {
		c := dial(t, fmt.Sprintf("127.0.0.%d:0", ip), n)
		carol := e2e.NewUser()
		cb, _ := carol.SignedBundle(1, time.Hour)
		if err := c.PublishBundle(t.Context(), cb); err != nil {
			full = err
			break
		}
		cbundle, _ := e2e.VerifyBundle(cb)
		for i := 0; i < 200; i++ {
			if _, err := c.Enqueue(t.Context(), e2etest.SealDM(t, alice, cbundle, []byte("filler"))); err != nil {
				if strings.Contains(err.Error(), "full") {
					full = err
				}
				break
			}
		}
	}
	if full == nil {
		t.Fatal("the store never reported itself full")
	}
	t.Logf("full store: %v", full)
	// Nothing it held was lost.
	got := map[string]bool{}
	for _, m := range recvAll(t, bob, n) {
		got[m.ID] = true
	}
	for _, id := range accepted {
		if !got[id] {
			t.Fatalf("accepted DM %s lost after the store filled (%d of %d delivered)", id, len(got), len(accepted))
		}
	}
}

func TestChallengeSignatureRelayedToAnotherNodeFails(t *testing.T) {
	n1 := startNode(t, "", "--listen", loop)
	n2 := startNode(t, "", "--listen", loop)
	u := e2e.NewUser()
	signed, _ := u.SignedBundle(1, time.Hour)

	// n1 is malicious: it connects to n2 as a client, takes n2's nonce and
	// has the user sign it inside the user's own session with n1.
	attacker := dial(t, "127.0.0.1:0", n2)
	nonce2, _, err := attacker.Challenge(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	victim := dial(t, "127.0.0.1:0", n1)
	_, exp1, err := victim.Challenge(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	n1fp, _ := identity.ParseFingerprint(n1.fp())
	sig, _ := u.SignPurpose("qpq client auth", authMessage(n1fp, exp1, nonce2))
	if _, err := attacker.AuthenticateWith(t.Context(), signed, nonce2, sig); err == nil || !strings.Contains(err.Error(), "authentication failed") {
		t.Fatalf("a signature made for another node and session authenticated: %v", err)
	}
	// The honest path on the same node works.
	honest := dial(t, "127.0.0.1:0", n2)
	mb, err := honest.Authenticate(t.Context(), u, signed)
	if err != nil {
		t.Fatalf("honest authentication: %v", err)
	}
	mb.Release()
}

func authMessage(node identity.Fingerprint, exporter, nonce []byte) []byte {
	return link.AuthMessage(link.PurposeMailbox, node, exporter, nonce)
}

func TestTamperedDMIsSkippedAndDeletesNothing(t *testing.T) {
	n := startNode(t, "", "--listen", loop)
	bob := newUser(t)
	recvAll(t, bob, n)
	c := dial(t, "127.0.0.1:0", n)
	to := lookup(t, c, bob.fp)
	alice := e2e.NewUser()
	bad := e2etest.SealDM(t, alice, to, []byte("tampered"))
	bad.Payload[len(bad.Payload)/2] ^= 0x40
	bad.ID = gossip.ComputeID(bad.Kind, bad.Destination, bad.ReceiptTag, bad.Payload)
	good := e2etest.SealDM(t, alice, to, []byte("intact"))
	for _, e := range []gossip.Envelope{bad, good} {
		if _, err := c.Enqueue(t.Context(), e); err != nil {
			t.Fatal(err)
		}
	}
	code, out, errOut := runQPQ(t, userEnv, "recv", "--home", bob.home, "--node", n.peerArg(), "--json")
	if code != 0 || !strings.Contains(errOut, bad.ID.String()) || !strings.Contains(errOut, "could not be opened") {
		t.Fatalf("recv: exit %d\nstdout %s\nstderr %s", code, out, errOut)
	}
	if strings.Count(out, "\n") != 1 || !strings.Contains(out, `"text":"intact"`) {
		t.Fatalf("recv showed:\n%s", out)
	}
	// The tampered envelope was not acknowledged (it cannot be); the good
	// one was, and nothing else was deleted.
	if k := n.kind("dm"); k != 1 {
		t.Fatalf("node holds %d DMs, want the 1 tampered one", k)
	}
}
