package store

import (
	"errors"
	"strings"
	"testing"

	"github.com/quicproquo/qpq/gossip"
	"github.com/quicproquo/qpq/schemas"

	"github.com/quicproquo/qpq/gossip/gossiptest"
)

// The shares tests attack a store of the daemon's shape (1 MiB, default
// shares) the ways issue 9 did: one party floods it with one kind from
// one source, and every other party must still get in.

const shareStore = 1 << 20

// flood puts envelopes made by mk from src until the store refuses one,
// and returns how many it took; a refusal must be a quota error.
func (ts *testStore) flood(src string, mk func() gossip.Envelope) int {
	ts.t.Helper()
	for n := 0; n < 1<<20; n++ {
		added, err := ts.Put(mk(), src)
		if err != nil {
			if !isQuota(err) {
				ts.t.Fatalf("flood from %s: %v", src, err)
			}
			return n
		}
		if !added {
			ts.t.Fatalf("flood from %s: a new envelope was not added", src)
		}
	}
	ts.t.Fatalf("flood from %s was never refused", src)
	return 0
}

func (ts *testStore) mustPutDMs(src string, dest []byte, n int) {
	ts.t.Helper()
	for i := range n {
		e := gossiptest.DM(dest, nil, 3600, 6)
		if added, err := ts.Put(e, src); err != nil || !added {
			ts.t.Fatalf("dm %d from %s after the flood: added=%v err=%v", i, src, added, err)
		}
	}
}

func TestShareLinkControlSpamDoesNotBlockItsDMs(t *testing.T) {
	// One peer floods receipts, bundles and descriptors over its link:
	// DMs over the same link, and over another, still get in.
	s := openFast(t, Options{MaxBytes: shareStore})
	n := s.flood("link X", func() gossip.Envelope { return gossiptest.Receipt(t) })
	n += s.flood("link X", func() gossip.Envelope { return gossiptest.Signed(schemas.Envelope_Kind_bundle, 6) })
	n += s.flood("link X", func() gossip.Envelope { return gossiptest.Signed(schemas.Envelope_Kind_descriptor, 2) })
	t.Logf("link X stored %d control envelopes before it was refused", n)
	s.mustPutDMs("link X", nil, 20)
	s.mustPutDMs("link Y", nil, 20)
	// And broadcasts.
	if added, err := s.Put(gossiptest.Broadcast(nil, 600), "link X"); err != nil || !added {
		t.Fatalf("broadcast after the flood: added=%v err=%v", added, err)
	}
}

func TestShareLocalFloodDoesNotBlockDMsOrReceipts(t *testing.T) {
	// An attacker publishes bundles of self-made identities (they reach
	// the store as the node's own, "client local"): DMs from links, and
	// the node's own receipts, still get in.
	s := openFast(t, Options{MaxBytes: shareStore})
	n := s.flood("client local", func() gossip.Envelope { return gossiptest.Signed(schemas.Envelope_Kind_bundle, 6) })
	t.Logf("%d bundles stored before refused", n)
	s.mustPutDMs("link X", nil, 20)
	for i := range 20 {
		if added, err := s.Put(gossiptest.Receipt(t), "client local"); err != nil || !added {
			t.Fatalf("receipt %d after the bundle flood: added=%v err=%v", i, added, err)
		}
	}
	// Acks of random secrets (receipts from "client local") do not stop
	// DMs either, nor the node's descriptor.
	s.flood("client local", func() gossip.Envelope { return gossiptest.Receipt(t) })
	s.mustPutDMs("link X", nil, 20)
	if added, err := s.Put(gossiptest.Signed(schemas.Envelope_Kind_descriptor, 2), "client local"); err != nil || !added {
		t.Fatalf("descriptor after the floods: added=%v err=%v", added, err)
	}
}

func TestShareOneSenderCannotFillAMailbox(t *testing.T) {
	s := openFast(t, Options{MaxBytes: shareStore})
	victim := gossiptest.Random(gossip.DestLen)
	n := s.flood("client 192.0.2.7", func() gossip.Envelope { return gossiptest.DM(victim, nil, 3600, 6) })
	t.Logf("one client stored %d dms for the victim before it was refused", n)
	_, err := s.Put(gossiptest.DM(victim, nil, 3600, 6), "client 192.0.2.7")
	if !errors.Is(err, ErrSourceQuota) {
		t.Fatalf("flooder refused with %v, want the source's share", err)
	}
	s.mustPutDMs("link A", victim, 10)
	s.mustPutDMs("client 198.51.100.1", victim, 10)
	if got, err := s.Mailbox(victim, 0); err != nil || len(got) != n+20 {
		t.Fatalf("mailbox holds %d (%v), want %d", len(got), err, n+20)
	}
}

func TestShareGreediestRefusedFirst(t *testing.T) {
	// With no per-source cap to stop it, a greedy source is refused once
	// the store is contended and it holds more than its fair share;
	// modest sources still get in while room remains.
	s := openFast(t, Options{MaxBytes: shareStore, MaxPerSource: shareStore})
	n := s.flood("link greedy", func() gossip.Envelope { return gossiptest.DM(nil, nil, 3600, 6) })
	_, err := s.Put(gossiptest.DM(nil, nil, 3600, 6), "link greedy")
	if !errors.Is(err, ErrSourceFull) || errors.Is(err, ErrFull) {
		t.Fatalf("greedy source refused with %v, want ErrSourceFull", err)
	}
	if !strings.Contains(err.Error(), "store full for this source") || strings.Contains(err.Error(), "greedy") {
		t.Errorf("error %q: want it to say the store is full for this source, without naming it", err)
	}
	st := s.Stats()
	t.Logf("greedy holds %d of %d message bytes", st.MessageBytes, st.MaxMessageBytes)
	if st.MessageBytes >= st.MaxMessageBytes {
		t.Fatalf("greedy took every byte (%d of %d)", st.MessageBytes, st.MaxMessageBytes)
	}
	s.mustPutDMs("link modest", nil, 20)
	s.mustPutDMs("client 203.0.113.9", nil, 20)
	if _, err := s.Put(gossiptest.DM(nil, nil, 3600, 6), "link greedy"); !errors.Is(err, ErrSourceFull) {
		t.Fatalf("greedy source after others came: %v", err)
	}
	t.Logf("greedy stored %d", n)
}

func TestPerSourceShare(t *testing.T) {
	if got := PerSourceShare(16 << 20); got != 1<<20 {
		t.Fatalf("PerSourceShare(16 MiB) = %d, want 1 MiB", got)
	}
	if got := PerSourceShare(0); got != 0 {
		t.Fatalf("PerSourceShare(0) = %d", got)
	}
	// What it says is what Put does: in a 64 KiB store an envelope larger
	// than the share is refused from any source, one under it taken.
	const max = 64 << 10
	share := PerSourceShare(max)
	s := openTest(t, Options{MaxBytes: max})
	big := gossiptest.DM(nil, nil, 3600, 1)
	for recordSize(t, big) <= share {
		big = gossiptest.DM(big.Destination, nil, 3600, len(big.Payload)/gossip.PadBlock+1)
	}
	small := gossiptest.DM(nil, nil, 3600, len(big.Payload)/gossip.PadBlock-1)
	for i, src := range []string{"link a", "client b", "client local"} {
		if _, err := s.Put(big, src); !errors.Is(err, ErrSourceFull) {
			t.Fatalf("envelope of %d bytes, share %d, from %s: %v", recordSize(t, big), share, src, err)
		}
		if i == 0 {
			s.mustPut(small, src)
		}
	}
}
