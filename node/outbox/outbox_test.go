package outbox

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/quicproquo/qpq/gossip"
	"github.com/quicproquo/qpq/mesh/identity"
	"github.com/quicproquo/qpq/mesh/testkit"
	"github.com/quicproquo/qpq/node/atrest"
	"github.com/quicproquo/qpq/node/client"
	"github.com/quicproquo/qpq/node/e2e"
	"github.com/quicproquo/qpq/node/e2e/e2etest"
)

var t0 = time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)

type rig struct {
	path  string
	u     *e2e.User
	clock *testkit.Clock
	o     *Outbox

	mu      sync.Mutex
	changes []State
}

func newRig(t *testing.T, cfg Config) *rig {
	t.Helper()
	r := &rig{path: filepath.Join(t.TempDir(), FileName), u: e2e.NewUser(), clock: testkit.NewClock(t0)}
	r.o = r.open(t, cfg)
	t.Cleanup(func() { checkFile(t, r.path) })
	return r
}

// checkFile runs bbolt's consistency check on a file the test wrote.
func checkFile(t *testing.T, path string) {
	t.Helper()
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		t.Errorf("open %s for the check: %v", path, err)
		return
	}
	defer db.Close()
	if err := db.View(func(tx *bolt.Tx) error {
		for err := range tx.Check() {
			return err
		}
		return nil
	}); err != nil {
		t.Errorf("%s is inconsistent: %v", path, err)
	}
}

func (r *rig) open(t *testing.T, cfg Config) *Outbox {
	t.Helper()
	cfg.Now = r.clock.Now
	cfg.OnChange = func(e Entry) {
		r.mu.Lock()
		r.changes = append(r.changes, e.State)
		r.mu.Unlock()
	}
	o, err := Open(r.path, r.u, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return o
}

// fakeNode is a Transport: down fails every call; it records what it
// stored, by id.
type fakeNode struct {
	mu      sync.Mutex
	down    bool
	bundles map[identity.Fingerprint]e2e.Bundle
	got     []gossip.Envelope
}

var errDown = errors.New("no qpq node answered")

func (f *fakeNode) Enqueue(_ context.Context, env gossip.Envelope) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.down {
		return errDown
	}
	f.got = append(f.got, env)
	return nil
}

func (f *fakeNode) LookupBundle(_ context.Context, fp identity.Fingerprint) (e2e.Bundle, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.down {
		return e2e.Bundle{}, errDown
	}
	b, ok := f.bundles[fp]
	if !ok {
		return e2e.Bundle{}, client.ErrNoBundle
	}
	return b, nil
}

func dmTo(to *e2e.User, body string) Message {
	return Message{To: to.Fingerprint(), ToName: "bob", Body: []byte(body), TTL: time.Hour, Hops: 16}
}

// A message typed with no node reachable stays queued (the attempts and
// the reason say why), then goes out when the node is back, as the very
// envelope written at first: its id never changes.
func TestQueuedWhileDownThenStoredWithTheSameID(t *testing.T) {
	r := newRig(t, Config{})
	bob := e2e.NewUser()
	if err := r.o.RememberBundle(e2etest.BundleOf(t, bob)); err != nil {
		t.Fatal(err)
	}
	e, err := r.o.Add(dmTo(bob, "meet at the water tower"))
	if err != nil {
		t.Fatal(err)
	}
	if e.State != Queued || !e.Sealed() || e.Seq != 1 {
		t.Fatalf("added: state %s sealed %v seq %d", e.State, e.Sealed(), e.Seq)
	}
	node := &fakeNode{down: true}
	s := NewSender(r.o, node, SenderConfig{})
	left, err := s.Pass(context.Background())
	if err != nil || left != 1 {
		t.Fatalf("pass while down: left %d, %v", left, err)
	}
	got, _ := r.o.Get(e.Ref)
	if got.State != Queued || got.Attempts != 1 || got.Reason == "" || got.ID != e.ID {
		t.Fatalf("after a failed attempt: %+v", got)
	}
	// The process ends; another opens the outbox and sends.
	o2 := r.open(t, Config{})
	node.down = false
	if left, err := NewSender(o2, node, SenderConfig{}).Pass(context.Background()); err != nil || left != 0 {
		t.Fatalf("pass: left %d, %v", left, err)
	}
	if len(node.got) != 1 || node.got[0].ID != e.ID {
		t.Fatalf("node got %d envelopes, want the one with id %s", len(node.got), e.ID)
	}
	if got, _ := o2.Get(e.Ref); got.State != Stored || got.Reason != "" {
		t.Fatalf("after the node answered: %s %q", got.State, got.Reason)
	}
	// Opened by bob, it is the message written.
	m, err := e2e.OpenDM(bob, node.got[0].Payload)
	if err != nil || string(m.Body) != "meet at the water tower" || !m.From.Equal(r.u.Fingerprint()) {
		t.Fatalf("bob opens %q from %s: %v", m.Body, m.From, err)
	}
	// Stored entries are not sent again.
	if _, err := NewSender(o2, node, SenderConfig{}).Pass(context.Background()); err != nil || len(node.got) != 1 {
		t.Fatalf("a second pass sent again: %d, %v", len(node.got), err)
	}
}

// A DM to someone whose bundle was never seen is written unsealed and
// sealed once the node supplies the bundle, before it is sent; with
// FailUnknown a recipient no node knows fails with the reason.
func TestUnsealedUntilBundleKnownOrFailed(t *testing.T) {
	r := newRig(t, Config{})
	bob, carol := e2e.NewUser(), e2e.NewUser()
	eb, _ := r.o.Add(dmTo(bob, "hi bob"))
	ec, _ := r.o.Add(dmTo(carol, "hi carol"))
	if eb.Sealed() || ec.Sealed() {
		t.Fatal("sealed without a bundle")
	}
	node := &fakeNode{bundles: map[identity.Fingerprint]e2e.Bundle{bob.Fingerprint(): e2etest.BundleOf(t, bob)}}
	if left, _ := NewSender(r.o, node, SenderConfig{}).Pass(context.Background()); left != 1 {
		t.Fatalf("left %d, want carol's waiting", left)
	}
	gb, _ := r.o.Get(eb.Ref)
	if gb.State != Stored || !gb.Sealed() || len(node.got) != 1 || node.got[0].ID != gb.ID {
		t.Fatalf("bob's: %s sealed %v, node got %d", gb.State, gb.Sealed(), len(node.got))
	}
	gc, _ := r.o.Get(ec.Ref)
	if gc.State != Queued || gc.Reason == "" {
		t.Fatalf("carol's without FailUnknown: %s %q", gc.State, gc.Reason)
	}
	NewSender(r.o, node, SenderConfig{FailUnknown: func(Entry) bool { return true }}).Pass(context.Background())
	if gc, _ = r.o.Get(ec.Ref); gc.State != Failed || gc.Seq != 0 || !bytes.Contains([]byte(gc.Reason), []byte("key bundle")) {
		t.Fatalf("carol's with FailUnknown: %s %q", gc.State, gc.Reason)
	}
	if gb.Seq != 1 {
		t.Fatalf("bob's first message sealed as number %d", gb.Seq)
	}
	// The bundle is remembered: the next message to bob is sealed at once.
	if e, _ := r.o.Add(dmTo(bob, "again")); !e.Sealed() || e.Seq != 2 {
		t.Fatalf("second message to bob: sealed %v seq %d", e.Sealed(), e.Seq)
	}
}

// Queued and stored entries whose TTL passes become expired (injected
// clock); final ones stay as they are.
func TestExpiredOnInjectedClock(t *testing.T) {
	r := newRig(t, Config{})
	bob := e2e.NewUser()
	r.o.RememberBundle(e2etest.BundleOf(t, bob))
	m := dmTo(bob, "a")
	m.TTL = time.Minute
	eq, _ := r.o.Add(m)
	es, _ := r.o.Add(m)
	ed, _ := r.o.Add(m)
	r.o.MarkStored(es.Ref)
	r.o.MarkStored(ed.Ref)
	if _, ok, _ := r.o.MarkDelivered(ed.ReceiptTag); !ok {
		t.Fatal("delivered not recorded")
	}
	r.clock.Advance(59 * time.Second)
	if done, _ := r.o.Expire(); len(done) != 0 {
		t.Fatalf("expired early: %d", len(done))
	}
	r.clock.Advance(time.Second)
	list, err := r.o.List()
	if err != nil {
		t.Fatal(err)
	}
	want := map[uint64]State{eq.Ref: Expired, es.Ref: Expired, ed.Ref: Delivered}
	for _, e := range list {
		if e.State != want[e.Ref] {
			t.Errorf("entry %d: %s, want %s", e.Ref, e.State, want[e.Ref])
		}
	}
	// An expired entry is never sent, and its receipt no longer counts.
	node := &fakeNode{}
	NewSender(r.o, node, SenderConfig{}).Pass(context.Background())
	if len(node.got) != 0 {
		t.Fatal("an expired entry was sent")
	}
	if _, ok, _ := r.o.MarkDelivered(es.ReceiptTag); ok {
		t.Fatal("an expired entry became delivered")
	}
}

// A receipt moves the matching entry to delivered once; receipts for
// other people's tags change nothing.
func TestMarkDeliveredMatchesOnlyOwnTags(t *testing.T) {
	r := newRig(t, Config{})
	bob := e2e.NewUser()
	r.o.RememberBundle(e2etest.BundleOf(t, bob))
	e, _ := r.o.Add(dmTo(bob, "a"))
	r.o.MarkStored(e.Ref)
	if _, ok, err := r.o.MarkDelivered([32]byte{1, 2, 3}); ok || err != nil {
		t.Fatalf("someone else's tag: %v %v", ok, err)
	}
	got, ok, err := r.o.MarkDelivered(e.ReceiptTag)
	if !ok || err != nil || got.State != Delivered {
		t.Fatalf("own tag: %v %v %s", ok, err, got.State)
	}
	if _, ok, _ := r.o.MarkDelivered(e.ReceiptTag); ok {
		t.Fatal("delivered twice")
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if want := []State{Queued, Stored, Delivered}; len(r.changes) != 3 || r.changes[0] != want[0] || r.changes[1] != want[1] || r.changes[2] != want[2] {
		t.Fatalf("changes %v, want %v", r.changes, want)
	}
}

// A full outbox refuses a new message with ErrFull and never drops a
// queued one; final and stored entries make room, oldest first.
func TestFullRefusesNeverDropsQueued(t *testing.T) {
	r := newRig(t, Config{MaxEntries: 3})
	bob := e2e.NewUser()
	r.o.RememberBundle(e2etest.BundleOf(t, bob))
	var es []Entry
	for range 3 {
		e, err := r.o.Add(dmTo(bob, "x"))
		if err != nil {
			t.Fatal(err)
		}
		es = append(es, e)
	}
	if _, err := r.o.Add(dmTo(bob, "y")); !errors.Is(err, ErrFull) {
		t.Fatalf("fourth: %v, want ErrFull", err)
	}
	r.o.MarkStored(es[1].Ref)
	r.o.MarkStored(es[2].Ref)
	r.o.MarkDelivered(es[2].ReceiptTag)
	e4, err := r.o.Add(dmTo(bob, "y"))
	if err != nil {
		t.Fatal(err)
	}
	list, _ := r.o.List()
	if len(list) != 3 || list[0].Ref != es[0].Ref || list[1].Ref != es[1].Ref || list[2].Ref != e4.Ref {
		t.Fatalf("kept %v, want the queued, the stored and the new one (the delivered one dropped)", refs(list))
	}
	if _, err := r.o.Add(dmTo(bob, "z")); err != nil {
		t.Fatal(err) // the stored one goes
	}
	if _, err := r.o.Add(dmTo(bob, "w")); !errors.Is(err, ErrFull) {
		t.Fatalf("all queued: %v, want ErrFull", err)
	}
	big := newRig(t, Config{MaxBytes: 16 << 10})
	m := Message{To: bob.Fingerprint(), Body: bytes.Repeat([]byte("a"), 3000), TTL: time.Hour}
	if _, err := big.o.Add(m); err != nil {
		t.Fatal(err)
	}
	if _, err := big.o.Add(m); !errors.Is(err, ErrFull) {
		t.Fatalf("over the byte bound: %v", err)
	}
}

func refs(es []Entry) []uint64 {
	var out []uint64
	for _, e := range es {
		out = append(out, e.Ref)
	}
	return out
}

// The file holds no plaintext body, recipient or envelope id, and another
// identity cannot open it.
func TestFileEncryptedAtRest(t *testing.T) {
	r := newRig(t, Config{})
	bob := e2e.NewUser()
	r.o.RememberBundle(e2etest.BundleOf(t, bob))
	body := "the secret plan is at the water tower"
	e, err := r.o.Add(dmTo(bob, body))
	if err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(r.path)
	if err != nil {
		t.Fatal(err)
	}
	for what, s := range map[string][]byte{"body": []byte(body), "recipient": fpBytes(bob), "id": e.ID[:], "receipt tag": e.ReceiptTag[:], "name": []byte("bob\"")} {
		if bytes.Contains(raw, s) {
			t.Errorf("the file shows the %s", what)
		}
	}
	if _, err := Open(r.path, e2e.NewUser(), Config{}); !errors.Is(err, ErrWrongKey) {
		t.Fatalf("another identity: %v, want ErrWrongKey", err)
	}
}

// Sequence numbers rise per conversation and survive reopening.
func TestNextSeqPerConversationPersists(t *testing.T) {
	r := newRig(t, Config{})
	a, b := [32]byte{1}, [32]byte{2}
	for i, want := range []uint64{1, 2} {
		if n, err := r.o.NextSeq(a); err != nil || n != want {
			t.Fatalf("a #%d: %d %v", i, n, err)
		}
	}
	if n, _ := r.o.NextSeq(b); n != 1 {
		t.Fatalf("b: %d", n)
	}
	if n, _ := r.open(t, Config{}).NextSeq(a); n != 3 {
		t.Fatalf("a after reopening: %d", n)
	}
}

// A process holding the file longer than the timeout gives ErrBusy, not
// a hang.
func TestBusyFileIsAClearError(t *testing.T) {
	r := newRig(t, Config{})
	db, err := bolt.Open(r.path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	_, err = Open(r.path, r.u, Config{Timeout: 100 * time.Millisecond})
	if !errors.Is(err, atrest.ErrBusy) {
		t.Fatalf("busy: %v, want atrest.ErrBusy", err)
	}
}

func fpBytes(u *e2e.User) []byte { fp := u.Fingerprint(); return fp[:] }

// Run (the chat's loop) sends what is added while the node is down as
// soon as it is woken after the node is back; it stops with its context.
func TestRunSendsOnWakeAndStops(t *testing.T) {
	testkit.LeakCheck(t)
	stored := make(chan Entry, 4)
	r := &rig{path: filepath.Join(t.TempDir(), FileName), u: e2e.NewUser(), clock: testkit.NewClock(t0)}
	o, err := Open(r.path, r.u, Config{Now: r.clock.Now, OnChange: func(e Entry) {
		if e.State == Stored {
			stored <- e
		}
	}})
	if err != nil {
		t.Fatal(err)
	}
	bob := e2e.NewUser()
	o.RememberBundle(e2etest.BundleOf(t, bob))
	node := &fakeNode{down: true}
	// Retry and Idle are long: only Wake can make the second pass.
	s := NewSender(o, node, SenderConfig{Retry: time.Hour, Idle: time.Hour})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.Run(ctx)
	}()
	e, _ := o.Add(dmTo(bob, "typed offline"))
	s.Wake()
	node.mu.Lock()
	node.down = false
	node.mu.Unlock()
	s.Wake()
	select {
	case got := <-stored:
		if got.Ref != e.Ref {
			t.Fatalf("stored %d, want %d", got.Ref, e.Ref)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("not sent after Wake")
	}
	cancel()
	<-done
	checkFile(t, r.path)
}

// The bundle remembered for offline sealing keeps what its owner reads: a
// DM written with no node reachable to a recipient on this build carries
// the sequence (version 2), one to an older client's bundle version 1.
func TestRememberedBundleKeepsTheInnerVersionItsOwnerReads(t *testing.T) {
	r := newRig(t, Config{})
	for _, reads := range []int{2, 1} {
		bob := e2e.NewUser()
		b := bob.Bundle()
		b.ReadsInner = reads
		if err := r.o.RememberBundle(b); err != nil {
			t.Fatal(err)
		}
		e, err := r.o.Add(Message{To: bob.Fingerprint(), Body: []byte("offline"), TTL: time.Hour})
		if err != nil || !e.Sealed() {
			t.Fatalf("Add: sealed %v, %v", e.Sealed(), err)
		}
		m, err := e2e.OpenDM(bob, e.Envelope.Payload)
		if err != nil {
			t.Fatal(err)
		}
		if m.Version != reads || (reads == 2) != (m.Seq == 1) {
			t.Fatalf("recipient reads %d: sealed version %d seq %d", reads, m.Version, m.Seq)
		}
	}
}
