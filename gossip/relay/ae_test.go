package relay

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"capnproto.org/go/capnp/v3"

	"github.com/quicproquo/qpq/gossip"
	"github.com/quicproquo/qpq/gossip/gossiptest"
	"github.com/quicproquo/qpq/gossip/store"
	"github.com/quicproquo/qpq/mesh/identity"
	"github.com/quicproquo/qpq/mesh/link"
	"github.com/quicproquo/qpq/schemas"
)

// sumRec is a neighbour that does not say its protocol version (so is
// taken for version 1): it records the summaries it is sent and, when
// to is set, hands them to that node's engine as from.
type sumRec struct {
	to   *tnode
	from identity.Fingerprint
	mu   sync.Mutex
	sums []Summary
}

func (r *sumRec) Push(ctx context.Context, envs []gossip.Envelope) (PushResult, error) {
	return PushResult{Accepted: len(envs), Taken: len(envs)}, nil
}

func (r *sumRec) Summary(ctx context.Context, s Summary) error {
	r.mu.Lock()
	r.sums = append(r.sums, s)
	r.mu.Unlock()
	if r.to != nil {
		return r.to.eng.HandleSummary(r.from, s)
	}
	return nil
}

func (r *sumRec) Raise(context.Context, []HopRaise) error { return nil }

// take returns the summaries recorded since the last take.
func (r *sumRec) take() []Summary {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := r.sums
	r.sums = nil
	return s
}

// v2Rec is a sumRec that speaks protocol version 2.
type v2Rec struct{ *sumRec }

func (v2Rec) ProtocolVersion() uint16 { return 2 }

// v2Mem is memPeer at protocol version 2.
type v2Mem struct{ memPeer }

func (v2Mem) ProtocolVersion() uint16 { return 2 }

// countStore counts the ids a store's scans hand out.
type countStore struct {
	*store.Store
	mu             sync.Mutex
	scans, inRange int // ids from IDs, from IDRange
}

func (c *countStore) IDs(fn func(gossip.ID, schemas.Envelope_Kind) bool) error {
	return c.Store.IDs(func(id gossip.ID, k schemas.Envelope_Kind) bool {
		c.mu.Lock()
		c.scans++
		c.mu.Unlock()
		return fn(id, k)
	})
}

func (c *countStore) IDRange(start, end []byte, fn func(gossip.ID, schemas.Envelope_Kind) bool) error {
	return c.Store.IDRange(start, end, func(id gossip.ID, k schemas.Envelope_Kind) bool {
		c.mu.Lock()
		c.inRange++
		c.mu.Unlock()
		return fn(id, k)
	})
}

func (c *countStore) counts() (scans, inRange int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.scans, c.inRange
}

// putDirect stores envelopes in n's store without telling its engine,
// so nothing is pushed: only anti-entropy can move them.
func putDirect(t *testing.T, n *tnode, envs ...gossip.Envelope) {
	t.Helper()
	for _, e := range envs {
		if added, err := n.st.Put(e, "c"); err != nil || !added {
			t.Fatalf("put %v: %v %v", e.ID, added, err)
		}
	}
}

// rangeOf is the index of the summary in sums whose range holds id.
func rangeOf(t *testing.T, sums []Summary, id gossip.ID) int {
	t.Helper()
	for i, s := range sums {
		r, err := checkRange(s.Start, s.End)
		if err != nil {
			t.Fatal(err)
		}
		if r.contains(id) {
			return i
		}
	}
	t.Fatalf("no range holds %v", id)
	return -1
}

func TestPartialSummariesBringAllMissingIDs(t *testing.T) {
	// b lacks 40 of a's 200 envelopes, spread over many of the ranges b's
	// partial summaries (16 ids each) cut: one round from b brings b all
	// of them, and a reads only its ids in each range, each once.
	clock := newClock()
	a, b := newTNode(t, clock), newTNode(t, clock)
	a.eng.Close()
	cs := &countStore{Store: a.st}
	a.eng = New(Options{Store: cs, Now: clock.Now})
	b.eng.o.SummaryPartIDs = 16

	var envs []gossip.Envelope
	for range 200 {
		envs = append(envs, gossiptest.DM(nil, nil, 3600, 1))
	}
	putDirect(t, a, envs...)
	putDirect(t, b, envs[40:]...)
	missing := envs[:40]

	defer a.eng.AddPeer(b.fp, v2Mem{memPeer{to: b, from: a.fp}})()
	toA := v2Rec{&sumRec{to: a, from: b.fp}}
	defer b.eng.AddPeer(a.fp, toA)()

	if err := b.eng.SendSummary(context.Background(), a.fp); err != nil {
		t.Fatal(err)
	}
	sums := toA.take()
	if len(sums) < 5 || len(sums) > 10 { // 160 ids, 16 a range or a few more, to a bucket's end
		t.Errorf("b sent %d summaries of its 160 ids, want 5..10 of 16 ids or a few more", len(sums))
	}
	ranges := map[int]bool{}
	for _, e := range missing {
		ranges[rangeOf(t, sums, e.ID)] = true
	}
	if len(ranges) < 3 {
		t.Fatalf("the missing ids fall in %d ranges; the test wants several", len(ranges))
	}
	for _, e := range missing {
		waitHas(t, b, e.ID, true)
	}
	scans, inRange := cs.counts()
	if scans != 0 || inRange != 200 {
		t.Errorf("a read %d ids by whole scans and %d by range reads, want 0 and its 200", scans, inRange)
	}
}

func TestVersion1NeighbourGetsWholeSummary(t *testing.T) {
	// A neighbour that does not say it speaks version 2 gets one summary
	// of the whole store, with no range, whatever SummaryPartIDs says; a
	// version-2 one gets contiguous ranges covering the id space.
	clock := newClock()
	n := newTNode(t, clock)
	n.eng.o.SummaryPartIDs = 16
	for range 100 {
		putDirect(t, n, gossiptest.DM(nil, nil, 3600, 1))
	}
	v1, v2 := &sumRec{}, v2Rec{&sumRec{}}
	defer n.eng.AddPeer(identity.Fingerprint{1}, v1)()
	defer n.eng.AddPeer(identity.Fingerprint{2}, v2)()
	ctx := context.Background()
	for _, fp := range []identity.Fingerprint{{1}, {2}} {
		if err := n.eng.sendSummary(ctx, n.eng.peer(fp), false); err != nil {
			t.Fatal(err)
		}
	}
	s1 := v1.take()
	if len(s1) != 1 || s1[0].Start != nil || s1[0].End != nil || s1[0].Count != 100 {
		t.Fatalf("version 1 got %d summaries (first %+v), want one whole summary of 100 ids", len(s1), s1[0])
	}
	s2 := v2.take()
	if len(s2) < 4 || len(s2) > 7 {
		t.Fatalf("version 2 got %d summaries, want 4..7 ranges of 16 ids or a few more", len(s2))
	}
	total := 0
	for i, s := range s2 {
		total += int(s.Count)
		// Cut at the first bucket boundary after 16 ids, so at most
		// twice that, and never fewer but in the last.
		if s.Count > 32 || (s.Count < 16 && i < len(s2)-1) {
			t.Errorf("range %d holds %d ids", i, s.Count)
		}
		if (i == 0) != (s.Start == nil) || (i == len(s2)-1) != (s.End == nil) {
			t.Errorf("range %d: start %x end %x; only the first may start open and the last end open", i, s.Start, s.End)
		}
		if i > 0 && !bytes.Equal(s2[i-1].End, s.Start) {
			t.Errorf("range %d does not start where range %d ends", i, i-1)
		}
	}
	if total != 100 {
		t.Errorf("the ranges hold %d ids, want 100", total)
	}
}

func TestRoundSharedAndFreshKeys(t *testing.T) {
	// Every link gets the round built for the first; a change to the
	// store is picked up after the rebuild gap (or at once when a summary
	// is asked for explicitly), and the next interval's round always has
	// a fresh key.
	clock := newClock()
	n := newTNode(t, clock)
	n.eng.ae.clock = clock.Now
	putDirect(t, n, gossiptest.DM(nil, nil, 3600, 1))
	ctx := context.Background()
	peers := []*sumRec{{}, {}}
	for i, r := range peers {
		defer n.eng.AddPeer(identity.Fingerprint{byte(i + 1)}, r)()
	}
	send := func(i int, force bool) Summary {
		t.Helper()
		if err := n.eng.sendSummary(ctx, n.eng.peer(identity.Fingerprint{byte(i + 1)}), force); err != nil {
			t.Fatal(err)
		}
		s := peers[i].take()
		if len(s) != 1 {
			t.Fatalf("%d summaries", len(s))
		}
		return s[0]
	}
	first := send(0, false)
	if s := send(1, false); !bytes.Equal(s.Key, first.Key) {
		t.Errorf("a second link in the same round got a new build")
	}
	putDirect(t, n, gossiptest.DM(nil, nil, 3600, 1))
	if s := send(1, false); !bytes.Equal(s.Key, first.Key) || s.Count != 1 {
		t.Errorf("a change at once rebuilt the round for every link (count %d)", s.Count)
	}
	if s := send(1, true); bytes.Equal(s.Key, first.Key) || s.Count != 2 {
		t.Errorf("an explicit summary after a change: count %d, same key %v; want a rebuild", s.Count, bytes.Equal(s.Key, first.Key))
	}
	putDirect(t, n, gossiptest.DM(nil, nil, 3600, 1))
	clock.Advance(time.Duration(float64(n.eng.o.SummaryInterval) * roundRebuildGap))
	changed := send(0, false)
	if changed.Count != 3 {
		t.Errorf("after the rebuild gap a changed store gives a summary of %d ids, want 3", changed.Count)
	}
	// No change, an interval later: a fresh key all the same.
	clock.Advance(n.eng.o.SummaryInterval)
	if s := send(0, false); bytes.Equal(s.Key, changed.Key) {
		t.Errorf("the next interval's round has the same key")
	}
}

func TestMalformedRangeRefused(t *testing.T) {
	clock := newClock()
	n := newTNode(t, clock)
	from := identity.Fingerprint{1}
	defer n.eng.AddPeer(from, newRecPeer())()
	key := make([]byte, summaryKeyLen)
	filter, err := filterOfIDs(key, nil)
	if err != nil {
		t.Fatal(err)
	}
	lo, hi := bytes.Repeat([]byte{0x10}, gossip.IDLen), bytes.Repeat([]byte{0x20}, gossip.IDLen)
	for _, c := range []struct {
		name       string
		start, end []byte
		want       string
	}{
		{"short start", lo[:31], nil, "range start is 31 bytes"},
		{"long end", nil, append(bytes.Clone(hi), 0), "range end is 33 bytes"},
		{"start after end", hi, lo, "is not before its end"},
		{"empty range", lo, lo, "is not before its end"},
		{"short digest", lo, hi, "digest is 5 bytes"},
	} {
		s := Summary{Filter: filter, Key: key, Start: c.start, End: c.end}
		if c.name == "short digest" {
			s.Digest = []byte{1, 2, 3, 4, 5}
		}
		err := n.eng.HandleSummary(from, s)
		if !errors.Is(err, ErrBadSummary) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: got %v, want ErrBadSummary saying %q", c.name, err, c.want)
		}
	}
	if err := n.eng.HandleSummary(from, Summary{Filter: filter, Key: key, Start: lo, End: hi}); err != nil {
		t.Errorf("a well-formed range: %v", err)
	}
}

func TestRoundOfRangesCostsOneSummary(t *testing.T) {
	// The summary budget (summaryBurst at once) counts rounds, not
	// messages: three rounds of several ranges are handled at one instant,
	// the fourth is refused.
	clock := newClock()
	n := newTNode(t, clock)
	n.eng.o.SummaryPartIDs = 16
	for range 100 {
		putDirect(t, n, gossiptest.DM(nil, nil, 3600, 1))
	}
	from := identity.Fingerprint{1}
	defer n.eng.AddPeer(from, newRecPeer())()
	sums, _, err := n.eng.makeParts()
	if err != nil || len(sums) < 4 {
		t.Fatalf("%d ranges, %v", len(sums), err)
	}
	for round := range summaryBurst + 1 {
		for i, s := range sums {
			err := n.eng.HandleSummary(from, s)
			if round < summaryBurst && err != nil {
				t.Fatalf("round %d range %d: %v", round, i, err)
			}
			if round == summaryBurst && i == 0 && !errors.Is(err, ErrRateLimited) {
				t.Fatalf("round %d at the same instant: got %v, want ErrRateLimited", round, err)
			}
		}
	}
}

// memIDs is an in-memory Store of ids only (no IDRange: the engine sorts
// IDs), for sizes a bbolt file takes too long to fill in a test.
type memIDs struct{ ids []gossip.ID }

func (m *memIDs) Put(gossip.Envelope, string) (bool, error) { return false, errors.ErrUnsupported }
func (m *memIDs) Get(gossip.ID) (gossip.Envelope, bool, error) {
	return gossip.Envelope{}, false, nil
}
func (m *memIDs) Mailbox([]byte, int) ([]gossip.Envelope, error) { return nil, nil }
func (m *memIDs) Delete(gossip.ID) (bool, error)                 { return false, nil }
func (m *memIDs) DeleteByReceiptTag([]byte) (int, error)         { return 0, nil }
func (m *memIDs) Has(gossip.ID) bool                             { return false }
func (m *memIDs) Purge() (int, int, error)                       { return 0, 0, nil }
func (m *memIDs) Apply([]store.Op) ([]store.Result, error)       { return nil, errors.ErrUnsupported }
func (m *memIDs) IDs(fn func(gossip.ID, schemas.Envelope_Kind) bool) error {
	for _, id := range m.ids {
		if !fn(id, schemas.Envelope_Kind_dm) {
			break
		}
	}
	return nil
}

// summaryMessageLen is the length of a summary call's parameters as one
// Cap'n Proto message.
func summaryMessageLen(t *testing.T, s Summary) int {
	t.Helper()
	msg, seg, err := capnp.NewMessage(capnp.SingleSegment(nil))
	if err != nil {
		t.Fatal(err)
	}
	ps, err := schemas.NewRootMeshPeer_summary_Params(seg)
	if err != nil {
		t.Fatal(err)
	}
	sum, err := ps.NewSummary()
	if err != nil {
		t.Fatal(err)
	}
	if err := errors.Join(sum.SetFilter(s.Filter), sum.SetKey(s.Key)); err != nil {
		t.Fatal(err)
	}
	if s.Start != nil {
		if err := sum.SetStart(s.Start); err != nil {
			t.Fatal(err)
		}
	}
	if s.End != nil {
		if err := sum.SetEnd(s.End); err != nil {
			t.Fatal(err)
		}
	}
	sum.SetCount(s.Count)
	b, err := msg.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return len(b)
}

func TestSummariesOf300kFitTheRPCBound(t *testing.T) {
	// 300k ids, past the ~218k where one whole filter outgrows the RPC
	// message bound: every partial summary (and the capped whole one an
	// old neighbour gets) encodes under link.MaxRPCMessage with room for
	// the call around it, each partial filter within 96 KiB, and the
	// node's own checks accept each. The ids are held in memory (memIDs):
	// filling bbolt with 300k takes minutes; the summaries are built from
	// ids alone either way.
	const n = 300_000
	raw := make([]byte, n*gossip.IDLen)
	rand.Read(raw)
	m := &memIDs{ids: make([]gossip.ID, n)}
	for i := range m.ids {
		m.ids[i] = gossip.ID(raw[i*gossip.IDLen:])
	}
	e := New(Options{Store: m})
	defer e.Close()
	const callRoom = 1 << 10 // the RPC call's own fields and framing
	for _, v := range []uint16{1, 2} {
		sums, err := e.round(v, false)
		if err != nil {
			t.Fatal(err)
		}
		total := 0
		for i, s := range sums {
			total += int(s.Count)
			if l := summaryMessageLen(t, s); l+callRoom > link.MaxRPCMessage {
				t.Errorf("version %d summary %d (%d ids): %d bytes, over the %d-byte bound less %d", v, i, s.Count, l, link.MaxRPCMessage, callRoom)
			}
			if v >= 2 && len(s.Filter) > 96<<10 {
				t.Errorf("range %d: a %d-byte filter", i, len(s.Filter))
			}
			if _, _, err := parseSummary(s); err != nil {
				t.Errorf("version %d summary %d refused: %v", v, i, err)
			}
		}
		want := n
		if v == 1 {
			want = maxSummaryIDs
		}
		if total != want {
			t.Errorf("version %d: the summaries hold %d ids, want %d", v, total, want)
		}
		if v >= 2 && len(sums) < 2 {
			t.Errorf("version 2: %d summaries", len(sums))
		}
	}
}

func TestAgreedRangesAreNotRead(t *testing.T) {
	// a holds b's 150 ids and 10 more; a has built its own round, so its
	// bucket table shows which of b's ranges it holds exactly as b does:
	// those it does not read at all, the rest it reads and pushes b what
	// it lacks.
	clock := newClock()
	a, b := newTNode(t, clock), newTNode(t, clock)
	a.eng.Close()
	cs := &countStore{Store: a.st}
	a.eng = New(Options{Store: cs, Now: clock.Now})
	a.eng.ae.clock = clock.Now
	b.eng.o.SummaryPartIDs = 16

	var envs []gossip.Envelope
	for range 160 {
		envs = append(envs, gossiptest.DM(nil, nil, 3600, 1))
	}
	putDirect(t, a, envs...)
	putDirect(t, b, envs[10:]...)
	missing := envs[:10]
	if _, err := a.eng.round(2, false); err != nil {
		t.Fatal(err)
	}

	defer a.eng.AddPeer(b.fp, v2Mem{memPeer{to: b, from: a.fp}})()
	toA := v2Rec{&sumRec{to: a, from: b.fp}}
	defer b.eng.AddPeer(a.fp, toA)()
	_, before := cs.counts()
	if err := b.eng.SendSummary(context.Background(), a.fp); err != nil {
		t.Fatal(err)
	}
	sums := toA.take()
	differ := map[int]bool{}
	for _, e := range missing {
		differ[rangeOf(t, sums, e.ID)] = true
	}
	if len(differ) == len(sums) {
		t.Fatalf("every one of the %d ranges holds a missing id; the test wants some in step", len(sums))
	}
	wantRead := 0
	for i := range differ {
		wantRead += int(sums[i].Count) // b's ids there...
	}
	for _, e := range missing {
		waitHas(t, b, e.ID, true)
	}
	wantRead += len(missing) // ...and those a holds besides
	if _, after := cs.counts(); after-before != wantRead {
		t.Errorf("a read %d ids, want the %d in the %d of %d ranges that differ", after-before, wantRead, len(differ), len(sums))
	}
}

func TestCrowdedBucketIsSplit(t *testing.T) {
	// Ids made to share their first bytes land in one bucket: the ranges
	// still hold at most twice SummaryPartIDs, and cover every id.
	m := &memIDs{}
	for i := range 50 {
		var id gossip.ID
		rand.Read(id[:])
		id[0], id[1] = 0x42, 0x40
		if i%10 == 0 {
			id[0] = byte(i)
		}
		m.ids = append(m.ids, id)
	}
	e := New(Options{Store: m, SummaryPartIDs: 4})
	defer e.Close()
	sums, _, err := e.makeParts()
	if err != nil {
		t.Fatal(err)
	}
	total := 0
	for i, s := range sums {
		total += int(s.Count)
		if s.Count > 8 {
			t.Errorf("range %d holds %d ids, over twice 4", i, s.Count)
		}
		if _, _, err := parseSummary(s); err != nil {
			t.Errorf("range %d: %v", i, err)
		}
	}
	for _, id := range m.ids {
		rangeOf(t, sums, id)
	}
	if total != len(m.ids) {
		t.Errorf("the ranges hold %d ids, want %d", total, len(m.ids))
	}
}

func TestAgreedSmallStoreIsNotRead(t *testing.T) {
	// A store that fits one range sends it without bounds (as version 1
	// does) but with its digest: a neighbour in step reads nothing; one
	// that holds an id more reads its store and pushes it.
	clock := newClock()
	a, b := newTNode(t, clock), newTNode(t, clock)
	a.eng.Close()
	cs := &countStore{Store: a.st}
	a.eng = New(Options{Store: cs, Now: clock.Now})
	a.eng.ae.clock = clock.Now
	var envs []gossip.Envelope
	for range 20 {
		envs = append(envs, gossiptest.DM(nil, nil, 3600, 1))
	}
	putDirect(t, a, envs...)
	putDirect(t, b, envs...)
	if _, err := a.eng.round(2, false); err != nil {
		t.Fatal(err)
	}
	defer a.eng.AddPeer(b.fp, v2Mem{memPeer{to: b, from: a.fp}})()
	toA := v2Rec{&sumRec{to: a, from: b.fp}}
	defer b.eng.AddPeer(a.fp, toA)()
	if err := b.eng.SendSummary(context.Background(), a.fp); err != nil {
		t.Fatal(err)
	}
	if s := toA.take(); len(s) != 1 || s[0].Start != nil || s[0].End != nil || len(s[0].Digest) != gossip.IDLen {
		t.Fatalf("b sent %d summaries, want one without bounds, with a digest", len(s))
	}
	if scans, inRange := cs.counts(); scans+inRange != 20 {
		t.Errorf("a in step with b read %d ids besides the 20 its own round read", scans+inRange-20)
	}
	// a gets one more (its table, rebuilt, shows it): b's next summary
	// differs, and a reads its store and pushes it.
	extra := gossiptest.DM(nil, nil, 3600, 1)
	putDirect(t, a, extra)
	if _, err := a.eng.round(2, true); err != nil {
		t.Fatal(err)
	}
	clock.Advance(n2(b.eng.o.SummaryGap)) // b's summary budget
	if err := b.eng.SendSummary(context.Background(), a.fp); err != nil {
		t.Fatal(err)
	}
	waitHas(t, b, extra.ID, true)
	if scans, _ := cs.counts(); scans != 21 {
		t.Errorf("a read %d ids by a whole scan, want its 21", scans)
	}
}

// n2 is twice d.
func n2(d time.Duration) time.Duration { return 2 * d }

func TestNewNeighbourGetsWhatCameAfterTheRound(t *testing.T) {
	// a built its round while empty, then got 5 envelopes (stored before
	// b linked, so none went to b by fan-out). b, new and empty, sends a
	// digest that matches a's old, empty table: a must still read its
	// store and push all 5, not wait for its next round.
	clock := newClock()
	a, b := newTNode(t, clock), newTNode(t, clock)
	a.eng.ae.clock = clock.Now
	if _, err := a.eng.round(2, false); err != nil {
		t.Fatal(err)
	}
	var envs []gossip.Envelope
	for range 5 {
		envs = append(envs, gossiptest.DM(nil, nil, 3600, 1))
	}
	putDirect(t, a, envs...)
	clock.Advance(time.Second)
	defer a.eng.AddPeer(b.fp, v2Mem{memPeer{to: b, from: a.fp}})()
	defer b.eng.AddPeer(a.fp, v2Mem{memPeer{to: a, from: b.fp}})()
	if err := b.eng.SendSummary(context.Background(), a.fp); err != nil {
		t.Fatal(err)
	}
	for _, e := range envs {
		waitHas(t, b, e.ID, true)
	}
}
