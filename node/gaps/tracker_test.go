package gaps

import (
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/quicproquo/qpq/mesh/identity"
)

// clock is an injected reader clock.
type clock struct{ t time.Time }

func (c *clock) now() time.Time          { return c.t }
func (c *clock) advance(d time.Duration) { c.t = c.t.Add(d) }

var (
	alice = identity.Fingerprint{1}
	bob   = identity.Fingerprint{2}
	t0    = time.Date(2026, 12, 2, 6, 0, 0, 0, time.UTC)
)

func newTracker(cfg Config) (*Tracker, *clock) {
	c := &clock{t: t0}
	cfg.Now = c.now
	return New(cfg), c
}

// msg is alice's DM number seq, sent seq minutes after t0 with a 1 h TTL.
func msg(seq uint64) Message {
	return Message{From: alice, Conv: ConvDM, Seq: seq, SentAt: t0.Add(time.Duration(seq) * time.Minute), TTL: time.Hour}
}

// texts words a result's notices with the name "alice".
func texts(ns []Notice) []string {
	var out []string
	for _, n := range ns {
		out = append(out, n.Text("alice"))
	}
	return out
}

func wantTexts(t *testing.T, got []Notice, want ...string) {
	t.Helper()
	if g := texts(got); !reflect.DeepEqual(g, want) && !(len(g) == 0 && len(want) == 0) {
		t.Fatalf("notices %q, want %q", g, want)
	}
}

// TestSecondOfThreeDropped: 1 and 3 arrive, 2 does not: one pending
// notice; still pending just before the TTL of 3 has passed on the
// reader's clock, missing at it.
func TestSecondOfThreeDropped(t *testing.T) {
	tr, c := newTracker(Config{})
	wantTexts(t, tr.Observe(msg(1)).Notices)
	c.advance(time.Minute)
	r := tr.Observe(msg(3))
	wantTexts(t, r.Notices, "1 message from alice not yet arrived")
	if n := r.Notices[0]; n.Kind != KindPending || n.Count != 1 || n.Pending != 1 || n.Missing != 0 || n.From != alice || n.Conv != ConvDM {
		t.Fatalf("notice %+v", n)
	}
	gs := tr.Gaps()
	if len(gs) != 1 || gs[0].First != 2 || gs[0].Last != 2 || gs[0].State != Pending || !gs[0].Deadline.Equal(c.t.Add(time.Hour)) {
		t.Fatalf("gaps %+v", gs)
	}
	c.advance(time.Hour - time.Millisecond)
	wantTexts(t, tr.Check())
	c.advance(time.Millisecond)
	wantTexts(t, tr.Check(), "1 message from alice missing")
	wantTexts(t, tr.Check()) // reported once
	if gs := tr.Gaps(); len(gs) != 1 || gs[0].State != Missing {
		t.Fatalf("gaps %+v", gs)
	}
}

// TestLateArrivalClears: the dropped message arrives after all.
func TestLateArrivalClears(t *testing.T) {
	tr, c := newTracker(Config{})
	tr.Observe(msg(1))
	tr.Observe(msg(3))
	c.advance(10 * time.Minute)
	wantTexts(t, tr.Observe(msg(2)).Notices, "a late message from alice arrived")
	if gs := tr.Gaps(); len(gs) != 0 {
		t.Fatalf("gaps left: %+v", gs)
	}
	c.advance(2 * time.Hour)
	wantTexts(t, tr.Check())
}

// TestSenderClockIgnored: the sender's clock is a year off; the deadline
// still follows the reader's clock.
func TestSenderClockIgnored(t *testing.T) {
	tr, c := newTracker(Config{})
	m1, m3 := msg(1), msg(3)
	m1.SentAt = m1.SentAt.AddDate(-1, 0, 0)
	m3.SentAt = m3.SentAt.AddDate(-1, 0, 0)
	tr.Observe(m1)
	wantTexts(t, tr.Observe(m3).Notices, "1 message from alice not yet arrived")
	c.advance(59 * time.Minute)
	wantTexts(t, tr.Check())
	c.advance(time.Minute)
	wantTexts(t, tr.Check(), "1 message from alice missing")
}

func TestNoTTLUsesMaxTTL(t *testing.T) {
	tr, c := newTracker(Config{})
	tr.Observe(msg(1))
	m := msg(3)
	m.TTL = 0
	tr.Observe(m)
	c.advance(DefaultMaxTTL - time.Second)
	wantTexts(t, tr.Check())
	c.advance(time.Second)
	wantTexts(t, tr.Check(), "1 message from alice missing")
}

func TestOutOfOrder(t *testing.T) {
	tr, c := newTracker(Config{})
	tr.Observe(msg(1))
	wantTexts(t, tr.Observe(msg(5)).Notices, "3 messages from alice not yet arrived")
	wantTexts(t, tr.Observe(msg(3)).Notices, "a late message from alice arrived; 2 not yet arrived")
	if gs := tr.Gaps(); len(gs) != 2 || gs[0].First != 2 || gs[0].Last != 2 || gs[1].First != 4 || gs[1].Last != 4 {
		t.Fatalf("gaps %+v", gs)
	}
	c.advance(30 * time.Minute)
	wantTexts(t, tr.Observe(msg(8)).Notices, "4 messages from alice not yet arrived")
	c.advance(30 * time.Minute) // the first gap's hour is up, not the second's
	wantTexts(t, tr.Check(), "2 messages from alice missing, 2 not yet arrived")
	wantTexts(t, tr.Observe(msg(2)).Notices, "a late message from alice arrived; 2 not yet arrived, 1 missing")
	wantTexts(t, tr.Observe(msg(4)).Notices, "a late message from alice arrived; 2 not yet arrived")
	wantTexts(t, tr.Observe(msg(7)).Notices, "a late message from alice arrived; 1 not yet arrived")
	wantTexts(t, tr.Observe(msg(6)).Notices, "a late message from alice arrived")
	if gs := tr.Gaps(); len(gs) != 0 {
		t.Fatalf("gaps left: %+v", gs)
	}
}

func TestDuplicates(t *testing.T) {
	tr, _ := newTracker(Config{})
	for _, s := range []uint64{1, 2, 3} {
		if r := tr.Observe(msg(s)); r.Duplicate || len(r.Notices) != 0 {
			t.Fatalf("first %d: %+v", s, r)
		}
	}
	for _, s := range []uint64{3, 1, 2, 3} {
		if r := tr.Observe(msg(s)); !r.Duplicate || len(r.Notices) != 0 {
			t.Fatalf("resend of %d: %+v", s, r)
		}
	}
	// A resend of a late message after the gap closed.
	tr.Observe(msg(5))
	tr.Observe(msg(4))
	if r := tr.Observe(msg(4)); !r.Duplicate || len(r.Notices) != 0 {
		t.Fatalf("resend of 4: %+v", r)
	}
	if gs := tr.Gaps(); len(gs) != 0 {
		t.Fatalf("gaps %+v", gs)
	}
}

func TestSeqZeroIgnored(t *testing.T) {
	tr, _ := newTracker(Config{})
	tr.Observe(msg(1))
	if r := tr.Observe(Message{From: alice, Conv: ConvDM}); r.Duplicate || len(r.Notices) != 0 {
		t.Fatalf("%+v", r)
	}
	wantTexts(t, tr.Observe(msg(2)).Notices)
}

// TestConversationsApart: numbers count per sender and conversation.
func TestConversationsApart(t *testing.T) {
	tr, _ := newTracker(Config{})
	ch := ConvChannel([32]byte{9})
	tr.Observe(msg(1))
	tr.Observe(Message{From: alice, Conv: ch, Seq: 1})
	tr.Observe(Message{From: bob, Conv: ConvDM, Seq: 1})
	wantTexts(t, tr.Observe(Message{From: alice, Conv: ch, Seq: 2}).Notices)
	wantTexts(t, tr.Observe(Message{From: bob, Conv: ConvDM, Seq: 2}).Notices)
	wantTexts(t, tr.Observe(msg(2)).Notices)
	wantTexts(t, tr.Observe(Message{From: alice, Conv: ch, Seq: 4}).Notices, "1 message from alice not yet arrived")
	if n := tr.Observe(Message{From: bob, Conv: ConvDM, Seq: 4}).Notices; len(n) != 1 || n[0].From != bob || n[0].Text("bob") != "1 message from bob not yet arrived" {
		t.Fatalf("%+v", n)
	}
}

// TestRestart: a sender whose numbers go back far (reinstalled, or a
// second device) is reported once, not as missing messages.
func TestRestart(t *testing.T) {
	tr, c := newTracker(Config{})
	for s := uint64(1); s <= 500; s++ {
		if s == 250 {
			continue
		}
		tr.Observe(msg(s))
	}
	// Counting from 1 again, later on the sender's clock.
	m := Message{From: alice, Conv: ConvDM, Seq: 1, SentAt: t0.Add(1000 * time.Minute), TTL: time.Hour}
	r := tr.Observe(m)
	wantTexts(t, r.Notices, "alice's messages are numbered anew (a reinstall or another device); 1 skipped message no longer tracked")
	if r.Notices[0].Kind != KindRestarted || r.Duplicate {
		t.Fatalf("%+v", r)
	}
	if gs := tr.Gaps(); len(gs) != 0 {
		t.Fatalf("gaps %+v", gs)
	}
	m.Seq, m.SentAt = 2, m.SentAt.Add(time.Minute)
	wantTexts(t, tr.Observe(m).Notices)
	c.advance(30 * 24 * time.Hour)
	wantTexts(t, tr.Check())
}

// TestRestartSameNumber: a message numbered like a recent one but sent at
// another time (second device, clock behind) is a new count, not a resend.
func TestRestartSameNumber(t *testing.T) {
	tr, _ := newTracker(Config{})
	tr.Observe(msg(1))
	tr.Observe(msg(2))
	m := msg(2)
	m.SentAt = t0.Add(-time.Hour)
	r := tr.Observe(m)
	if r.Duplicate || len(r.Notices) != 1 || r.Notices[0].Kind != KindRestarted {
		t.Fatalf("%+v", r)
	}
}

// TestOldResendNotRestart: an old number with an old send time, beyond
// what is remembered, changes nothing.
func TestOldResendNotRestart(t *testing.T) {
	tr, _ := newTracker(Config{})
	for s := uint64(1); s <= 20; s++ {
		tr.Observe(msg(s))
	}
	if r := tr.Observe(msg(2)); r.Duplicate || len(r.Notices) != 0 {
		t.Fatalf("%+v", r)
	}
	wantTexts(t, tr.Observe(msg(22)).Notices, "1 message from alice not yet arrived")
}

// TestBigJump: a leap past MaxJump is a new count, not a million gaps.
func TestBigJump(t *testing.T) {
	tr, _ := newTracker(Config{})
	tr.Observe(msg(1))
	tr.Observe(msg(3))
	r := tr.Observe(msg(5_000_000))
	if len(r.Notices) != 1 || r.Notices[0].Kind != KindRestarted || r.Notices[0].Count != 1 {
		t.Fatalf("%+v", r)
	}
	wantTexts(t, tr.Observe(msg(5_000_001)).Notices)
	wantTexts(t, tr.Observe(msg(5_000_000+DefaultMaxJump+2)).Notices, fmt.Sprintf("%d messages from alice not yet arrived", DefaultMaxJump))
}

// TestBounds: streams and gaps stay within the Config.
func TestBounds(t *testing.T) {
	tr, _ := newTracker(Config{MaxStreams: 3, MaxGaps: 2})
	for s := uint64(1); s <= 20; s += 2 {
		tr.Observe(msg(s)) // gaps 2, 4, 6, ...
	}
	gs := tr.Gaps()
	if len(gs) != 2 || gs[0].First != 16 || gs[1].First != 18 {
		t.Fatalf("gaps %+v", gs)
	}
	// A dropped gap's late message is no longer reported.
	wantTexts(t, tr.Observe(msg(2)).Notices)
	for i := range 5 {
		tr.Observe(Message{From: identity.Fingerprint{byte(10 + i)}, Conv: ConvDM, Seq: 1})
	}
	if len(tr.streams) != 3 {
		t.Fatalf("%d streams", len(tr.streams))
	}
	if _, ok := tr.streams[streamKey{alice, ConvDM}]; ok {
		t.Fatal("the least recently used stream was kept")
	}
	long := strings.Repeat("x", 10_000)
	tr.Observe(Message{From: alice, Conv: long, Seq: 1})
	for k := range tr.streams {
		if len(k.conv) > MaxConvLen {
			t.Fatalf("conversation key of %d bytes", len(k.conv))
		}
	}
	wantTexts(t, tr.Observe(Message{From: alice, Conv: long, Seq: 3}).Notices, "1 message from alice not yet arrived")
}

// TestReaderClockBack: the reader's clock jumps back (a router booting
// without a real-time clock): the gap turns missing one TTL after the
// jump, as if it had been seen then, not decades later.
func TestReaderClockBack(t *testing.T) {
	tr, c := newTracker(Config{})
	tr.Observe(msg(1))
	tr.Observe(msg(3))
	c.advance(10 * time.Minute)
	c.t = time.Unix(0, 0)
	wantTexts(t, tr.Check())
	c.advance(time.Hour - time.Millisecond)
	wantTexts(t, tr.Check())
	c.advance(time.Millisecond)
	wantTexts(t, tr.Check(), "1 message from alice missing")
}
