package store

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/quicproquo/qpq/gossip"

	"github.com/quicproquo/qpq/gossip/gossiptest"
)

func putOp(e gossip.Envelope, source string) Op { return Op{Put: &e, Source: source} }

func deleteOp(id gossip.ID) Op { return Op{Delete: &id} }

// mustApply applies ops and fails the test on a batch error.
func (ts *testStore) mustApply(ops ...Op) []Result {
	ts.t.Helper()
	res, err := ts.Apply(ops)
	if err != nil {
		ts.t.Fatalf("apply: %v", err)
	}
	if len(res) != len(ops) {
		ts.t.Fatalf("apply of %d ops returned %d results", len(ops), len(res))
	}
	return res
}

// assertAbsent fails if any of the envelopes is stored.
func (ts *testStore) assertAbsent(es ...gossip.Envelope) {
	ts.t.Helper()
	for _, e := range es {
		if _, ok, err := ts.Get(e.ID); ok || err != nil {
			ts.t.Fatalf("envelope %v is stored (err %v)", e.ID, err)
		}
	}
}

// assertUnknown fails if any of the envelopes is stored or tombstoned.
func (ts *testStore) assertUnknown(es ...gossip.Envelope) {
	ts.t.Helper()
	for _, e := range es {
		if ts.Has(e.ID) {
			ts.t.Fatalf("envelope %v is stored or tombstoned", e.ID)
		}
	}
}

func TestApplyOneCommitSurvivesReopen(t *testing.T) {
	s := openTest(t, Options{})
	var es []gossip.Envelope
	var ops []Op
	for range 32 {
		e := gossiptest.DM(nil, nil, 3600, 1)
		es = append(es, e)
		ops = append(ops, putOp(e, "link"))
	}
	gone := es[5]
	ops = append(ops, Op{DeleteTag: gone.ReceiptTag}, deleteOp(es[6].ID))
	before := s.Stats().Commits
	res := s.mustApply(ops...)
	if got := s.Stats().Commits - before; got != 1 {
		t.Fatalf("a batch of %d ops took %d commits, want 1", len(ops), got)
	}
	for i, r := range res[:32] {
		if !r.Added || r.Err != nil {
			t.Fatalf("op %d: %+v", i, r)
		}
	}
	if res[32].Deleted != 1 || res[33].Deleted != 1 || res[32].Err != nil || res[33].Err != nil {
		t.Fatalf("deletes: %+v %+v", res[32], res[33])
	}

	s.reopen()
	s.assertHeld(es[:5]...)
	s.assertHeld(es[7:]...)
	s.assertAbsent(es[5], es[6])
	if st := s.Stats(); st.Envelopes != 30 || st.Tombstones != 2 {
		t.Fatalf("after reopen: %d envelopes, %d tombstones; want 30, 2", st.Envelopes, st.Tombstones)
	}
	for _, e := range es[5:7] {
		if added, err := s.Put(e, "late"); added || err != nil {
			t.Fatalf("a deleted envelope was taken in again: added=%v err=%v", added, err)
		}
	}
}

func TestApplyRefusedOpsLeaveTheRest(t *testing.T) {
	size := sizeOneBlock(t)
	s := openTest(t, Options{MaxPerMailbox: size, MaxPerMailboxSource: size})
	dest := gossiptest.Random(gossip.DestLen)
	a := gossiptest.DM(dest, nil, 3600, 1)
	full := gossiptest.DM(dest, nil, 3600, 1) // the mailbox holds a already
	noTTL := gossiptest.DM(nil, nil, 0, 1)
	bad := gossiptest.DM(nil, nil, 3600, 1)
	bad.Payload[0] ^= 1 // its id no longer matches
	c := gossiptest.DM(nil, nil, 3600, 1)
	ops := []Op{
		putOp(a, "x"),
		putOp(full, "y"),
		putOp(noTTL, "x"),
		putOp(bad, "x"),
		{DeleteTag: []byte("short")},
		{},
		{Put: &c, Delete: &c.ID},
		putOp(c, "x"),
	}
	before := s.Stats()
	res := s.mustApply(ops...)
	for i, want := range []error{nil, ErrMailboxQuota, ErrExpired, nil, nil, nil, nil, nil} {
		if want != nil && !errors.Is(res[i].Err, want) {
			t.Errorf("op %d: err %v, want %v", i, res[i].Err, want)
		}
	}
	for i, want := range []string{"", "store: put " + full.ID.String(), "store: put " + noTTL.ID.String(), "store: put: ",
		fmt.Sprintf("store: delete by receipt tag: tag is 5 bytes, want %d", gossip.TagLen), "sets 0 of", "sets 2 of", ""} {
		switch {
		case want == "" && res[i].Err != nil:
			t.Errorf("op %d refused: %v", i, res[i].Err)
		case want != "" && (res[i].Err == nil || !strings.Contains(res[i].Err.Error(), want)):
			t.Errorf("op %d: err %v, want it to say %q", i, res[i].Err, want)
		}
		if res[i].Err != nil && (res[i].Added || res[i].Deleted != 0) {
			t.Errorf("refused op %d reports %+v", i, res[i])
		}
	}
	if !res[0].Added || !res[7].Added {
		t.Fatalf("the ops around the refused ones: %+v, %+v", res[0], res[7])
	}
	s.assertHeld(a, c)
	s.assertUnknown(full, noTTL, bad)
	after := s.Stats()
	if after.Envelopes != before.Envelopes+2 || after.Bytes != before.Bytes+2*size || after.Tombstones != 0 {
		t.Fatalf("stats after the batch: %+v", after)
	}
	// The refused put left nothing behind: the file's indexes and
	// mailbox usage match its records (checked at cleanup), and y got
	// charged nothing, so it may still put elsewhere.
	if after.Sources != 1 {
		t.Fatalf("%d sources hold bytes, want only x", after.Sources)
	}
}

func TestApplyReceiptTagInSameBatch(t *testing.T) {
	s := openTest(t, Options{})
	x := gossiptest.DM(nil, nil, 3600, 2)
	other := gossiptest.DM(nil, nil, 3600, 1)
	res := s.mustApply(putOp(x, "a"), putOp(other, "a"), Op{DeleteTag: x.ReceiptTag}, putOp(x, "b"))
	if !res[0].Added || !res[1].Added || res[2].Deleted != 1 || res[3].Added || res[3].Err != nil {
		t.Fatalf("results: %+v", res)
	}
	s.assertAbsent(x)
	s.assertHeld(other)
	if st := s.Stats(); st.Envelopes != 1 || st.Tombstones != 1 || st.Sources != 1 || st.Bytes != recordSize(t, other) {
		t.Fatalf("stats: %+v", st)
	}
	s.reopen()
	s.assertAbsent(x)
	if added, err := s.Put(x, "c"); added || err != nil {
		t.Fatalf("a receipted envelope was taken in again: added=%v err=%v", added, err)
	}
}

func TestApplyDuplicates(t *testing.T) {
	s := openTest(t, Options{})
	x := gossiptest.DM(nil, nil, 3600, 1)
	y := gossiptest.DM(nil, nil, 3600, 1)
	res := s.mustApply(putOp(x, "a"), putOp(x, "b"), deleteOp(y.ID), putOp(y, "a"), deleteOp(y.ID))
	if !res[0].Added || res[1].Added || res[1].Err != nil {
		t.Fatalf("the same id put twice: %+v %+v", res[0], res[1])
	}
	if res[2].Deleted != 0 || res[3].Added || res[4].Deleted != 0 {
		t.Fatalf("an id deleted before its put: %+v", res[2:])
	}
	if st := s.Stats(); st.Envelopes != 1 || st.Tombstones != 1 || st.Sources != 1 {
		t.Fatalf("stats: %+v", st)
	}

	// A batch that writes nothing costs no commit.
	before := s.Stats().Commits
	res = s.mustApply(putOp(x, "a"), deleteOp(y.ID), Op{DeleteTag: y.ReceiptTag})
	if res[0].Added || res[1].Deleted != 0 || res[2].Deleted != 0 {
		t.Fatalf("a batch of repeats: %+v", res)
	}
	if got := s.Stats().Commits - before; got != 0 {
		t.Fatalf("a batch that changes nothing took %d commits", got)
	}
}

// TestApplyQuotaAsOneByOne runs the same ops through one batch on one
// store and one by one (Put, Delete, DeleteByReceiptTag) on another:
// every refusal, every figure and what each source may still put must
// be the same.
func TestApplyQuotaAsOneByOne(t *testing.T) {
	size := sizeOneBlock(t)
	o := Options{MaxBytes: 40*size + 3, MaxReceiptBytes: 1, MaxBundleBytes: 1, MaxDescriptorBytes: 1,
		MaxPerSource: 20 * size, MaxPerMailbox: 8 * size, MaxPerMailboxSource: 5 * size}
	batch, single := openFast(t, o), openFast(t, o)
	rng := rand.New(rand.NewPCG(1, 2))
	var dests [][]byte
	for range 6 {
		dests = append(dests, gossiptest.Random(gossip.DestLen))
	}
	sources := []string{"early", "a", "b", "c", "d"}
	var put []gossip.Envelope
	var ops []Op
	// One source takes half the budget before it is contended, so that
	// the others' fair shares add up to more than is left (ErrFull).
	for i := range 20 {
		e := gossiptest.DM(dests[i%len(dests)], nil, 3600, 1)
		put = append(put, e)
		ops = append(ops, putOp(e, "early"))
	}
	for range 200 {
		switch r := rng.IntN(10); {
		case r < 7:
			e := gossiptest.DM(dests[rng.IntN(len(dests))], nil, 3600, 1)
			put = append(put, e)
			ops = append(ops, putOp(e, sources[rng.IntN(len(sources))]))
		case r == 7:
			ops = append(ops, Op{DeleteTag: put[rng.IntN(len(put))].ReceiptTag})
		case r == 8:
			ops = append(ops, deleteOp(put[rng.IntN(len(put))].ID))
		default:
			ops = append(ops, putOp(put[rng.IntN(len(put))], sources[rng.IntN(len(sources))]))
		}
	}
	refusals := applyBothWays(t, batch, single, ops)
	if refusals[ErrFull] == 0 || refusals[ErrSourceFull] == 0 || refusals[ErrMailboxQuota] == 0 {
		t.Fatalf("the ops do not reach every quota: %v", refusals)
	}
	compareStats(t, batch.Stats(), single.Stats())

	// What each source may still put into each mailbox is the same too.
	for _, src := range append(sources, "new") {
		for _, d := range dests {
			e := gossiptest.DM(d, nil, 3600, 1)
			a1, e1 := batch.Put(e, src)
			a2, e2 := single.Put(e, src)
			if a1 != a2 || fmt.Sprint(e1) != fmt.Sprint(e2) {
				t.Fatalf("%s into a mailbox after the ops: batch added=%v err=%v, one by one added=%v err=%v", src, a1, e1, a2, e2)
			}
		}
	}
	compareStats(t, batch.Stats(), single.Stats())
}

// applyBothWays applies ops as one batch on batch and one by one on
// single, fails unless every result is the same, and counts the quota
// refusals by kind.
func applyBothWays(t *testing.T, batch, single *testStore, ops []Op) map[error]int {
	t.Helper()
	got := batch.mustApply(ops...)
	refusals := map[error]int{}
	for i, op := range ops {
		var want Result
		var err error
		switch {
		case op.Put != nil:
			want.Added, err = single.Put(*op.Put, op.Source)
		case op.Delete != nil:
			var removed bool
			removed, err = single.Delete(*op.Delete)
			if removed {
				want.Deleted = 1
			}
		default:
			want.Deleted, err = single.DeleteByReceiptTag(op.DeleteTag)
		}
		if got[i].Added != want.Added || got[i].Deleted != want.Deleted || fmt.Sprint(got[i].Err) != fmt.Sprint(err) {
			t.Fatalf("op %d: batch %+v, one by one added=%v deleted=%d err=%v", i, got[i], want.Added, want.Deleted, err)
		}
		for _, q := range []error{ErrFull, ErrSourceFull, ErrMailboxQuota} {
			if errors.Is(err, q) {
				refusals[q]++
			}
		}
	}
	return refusals
}

func compareStats(t *testing.T, a, b Stats) {
	t.Helper()
	a.Elapsed, b.Elapsed, a.Commits, b.Commits = 0, 0, 0, 0
	if a != b {
		t.Fatalf("stats differ:\nbatch      %+v\none by one %+v", a, b)
	}
}

func TestApplyBatchBound(t *testing.T) {
	s := openFast(t, Options{})
	ops := make([]Op, MaxBatch+1)
	for i := range ops {
		ops[i] = putOp(gossiptest.DM(nil, nil, 3600, 1), "a")
	}
	before := s.Stats()
	res, err := s.Apply(ops)
	if err == nil || res != nil || !strings.Contains(err.Error(), fmt.Sprint(MaxBatch+1)) || !strings.Contains(err.Error(), fmt.Sprint(MaxBatch)) {
		t.Fatalf("a batch of %d: res=%v err=%v", len(ops), res, err)
	}
	compareStats(t, s.Stats(), before)
	res = s.mustApply(ops[:MaxBatch]...)
	for i, r := range res {
		if !r.Added {
			t.Fatalf("op %d of a batch of MaxBatch: %+v", i, r)
		}
	}
}

// TestApplyFailsWhole makes the file fail in the middle of a batch (a
// damaged receipt tag index entry): nothing of the batch is applied,
// the counters and each source's quota use are as before.
func TestApplyFailsWhole(t *testing.T) {
	size := sizeOneBlock(t)
	s := openTest(t, Options{MaxPerSource: 2 * size})
	tag := gossiptest.Random(gossip.TagLen)
	err := s.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketTag).Put(cat(tag, []byte{1}), []byte{}) })
	if err != nil {
		t.Fatal(err)
	}
	a, b := gossiptest.DM(nil, nil, 3600, 1), gossiptest.DM(nil, nil, 3600, 1)
	before := s.Stats()
	res, err := s.Apply([]Op{putOp(a, "src"), putOp(b, "src"), {DeleteTag: tag}})
	if !errors.Is(err, ErrCorrupt) || res != nil {
		t.Fatalf("apply over a damaged index: res=%v err=%v", res, err)
	}
	s.assertAbsent(a, b)
	if after := s.Stats(); after != before {
		t.Fatalf("stats changed by a failed batch:\nbefore %+v\nafter  %+v", before, after)
	}
	// Had the failed batch's charges stayed, src would be at its limit.
	s.mustPut(a, "src")
	s.mustPut(b, "src")
	if err := s.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketTag).Delete(cat(tag, []byte{1})) }); err != nil {
		t.Fatal(err)
	}
}

// TestApplyRetryAfterPurge fills the store with envelopes that then
// expire: the batch's puts are refused, the expired ones purged, and the
// puts retried; one whose receipt comes later in the batch is deleted
// as it would have been in order.
func TestApplyRetryAfterPurge(t *testing.T) {
	size := sizeOneBlock(t)
	s := openTest(t, Options{MaxBytes: 8*size + 3, MaxReceiptBytes: 1, MaxBundleBytes: 1, MaxDescriptorBytes: 1,
		MaxPerSource: 8 * size, MaxPerMailbox: 8 * size, MaxPerMailboxSource: 8 * size})
	old := 0
	for ; ; old++ { // until a new source is refused
		added, err := s.Put(gossiptest.DM(nil, nil, 60, 1), fmt.Sprint("old", old))
		if isQuota(err) {
			break
		}
		if !added || err != nil {
			t.Fatalf("put: added=%v err=%v", added, err)
		}
	}
	s.clock.Advance(2 * time.Minute)
	x, y := gossiptest.DM(nil, nil, 3600, 1), gossiptest.DM(nil, nil, 3600, 1)
	res := s.mustApply(putOp(x, "new"), Op{DeleteTag: x.ReceiptTag}, putOp(y, "new"))
	if !res[0].Added || res[1].Deleted != 1 || !res[2].Added {
		t.Fatalf("results: %+v", res)
	}
	for i, r := range res {
		if r.Err != nil {
			t.Fatalf("op %d: %v", i, r.Err)
		}
	}
	s.assertAbsent(x)
	s.assertHeld(y)
	if st := s.Stats(); st.Envelopes != 1 || st.Tombstones != int64(old)+1 || st.Bytes != size {
		t.Fatalf("stats: %+v", st)
	}
}
