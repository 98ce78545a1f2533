package store

import (
	"bytes"
	"fmt"
	"testing"
	"time"

	"github.com/quicproquo/qpq/gossip"
	"github.com/quicproquo/qpq/schemas"

	"github.com/quicproquo/qpq/gossip/gossiptest"
)

// TestFlowTwoNodes is issue 9's honest traffic at store level: a client
// at node A sends 30,000 DMs at 25 a second (on the stores' clock) to a
// user whose client fetches and acknowledges them at node B. Each DM is
// stored at A (from the client) and at B (from the link); each ack
// deletes it at B, stores the node's own receipt there, and the receipt
// deletes it at A and is stored there (from the link). Both users'
// bundles and both nodes' descriptors are republished as they would be.
// The stores have the daemon's old shares (16 MiB, a sixteenth per
// source, a quarter per mailbox), with which the node-local receipts
// stopped everything after 2,597 messages. As on two real nodes, A and B
// work at the same time: A's part runs in its own goroutine, in order.
func TestFlowTwoNodes(t *testing.T) {
	const (
		total   = 30000
		rate    = 25 // messages a second
		fetchAt = 10 // the recipient fetches every this many messages
	)
	clock := newClock()
	opt := Options{MaxBytes: 16 << 20, MaxPerSource: 1 << 20, MaxPerMailbox: 4 << 20, Clock: clock}
	a, b := openFast(t, opt), openFast(t, opt)
	bob, alice := gossiptest.Random(gossip.DestLen), gossiptest.Random(gossip.DestLen)
	nodeA, nodeB := gossiptest.Random(gossip.DestLen), gossiptest.Random(gossip.DestLen)

	// Node A's work, in arrival order; the first error stops it.
	atA := make(chan func() error, 1024)
	doneA := make(chan error, 1)
	go func() {
		var first error
		for op := range atA {
			if first == nil {
				first = op()
			}
		}
		doneA <- first
	}()
	stopA := func() error {
		if atA == nil {
			return nil
		}
		close(atA)
		atA = nil
		return <-doneA
	}
	defer stopA()

	put := func(s *testStore, e gossip.Envelope, src string, i int) error {
		if added, err := s.Put(e, src); err != nil || !added {
			return fmt.Errorf("message %d: put %s from %s: added=%v err=%v", i, e.Kind, src, added, err)
		}
		return nil
	}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	// republish replaces what a node holds of kind for dest, as relay does
	// for a newer bundle or descriptor, at both nodes.
	held := map[string]gossip.ID{}
	republish := func(kind schemas.Envelope_Kind, dest []byte, home *testStore, i int) {
		t.Helper()
		e := gossiptest.Signed(kind, 6)
		e.Destination = dest
		e.ID = gossip.ComputeID(e.Kind, e.Destination, nil, e.Payload)
		key := kind.String() + string(dest)
		old, replace := held[key]
		held[key] = e.ID
		at := func(s *testStore) error {
			if replace {
				if _, err := s.Delete(old); err != nil {
					return fmt.Errorf("message %d: replace %s: %w", i, kind, err)
				}
			}
			src := "link other"
			if s == home {
				src = "client local"
			}
			return put(s, e, src, i)
		}
		atA <- func() error { return at(a) }
		must(at(b))
	}
	// receipt is an ack's receipt arriving at s from src: it deletes the
	// DM and is stored.
	receipt := func(s *testStore, r gossip.Envelope, src string, i int) error {
		if n, err := s.DeleteByReceiptTag(r.Destination); err != nil || n != 1 {
			return fmt.Errorf("message %d: receipt deleted %d (%v), want 1", i, n, err)
		}
		return put(s, r, src, i)
	}

	secrets := map[gossip.ID][]byte{}
	delivered := 0
	fetch := func(i int) {
		t.Helper()
		got, err := b.Mailbox(bob, 256)
		must(err)
		for _, e := range got {
			if e.Kind != schemas.Envelope_Kind_dm {
				continue
			}
			k, ok := secrets[e.ID]
			if !ok {
				t.Fatalf("message %d: fetched %v twice or never sent", i, e.ID)
			}
			delete(secrets, e.ID)
			delivered++
			r, err := gossip.NewReceipt(k, 7*24*3600, 16)
			must(err)
			must(receipt(b, r, "client local", i))                    // the ack at B
			atA <- func() error { return receipt(a, r, "link B", i) } // its push to A
		}
	}

	start := time.Now()
	for i := range total {
		switch {
		case i%1000 == 0:
			republish(schemas.Envelope_Kind_bundle, bob, b, i)
			republish(schemas.Envelope_Kind_bundle, alice, a, i)
		case i%1000 == 500:
			republish(schemas.Envelope_Kind_descriptor, nodeA, a, i)
			republish(schemas.Envelope_Kind_descriptor, nodeB, b, i)
		}
		k := gossiptest.Random(gossip.SecretLen)
		tag := gossip.ReceiptTag(k)
		e := gossiptest.DM(bob, tag[:], 7*24*3600, 6)
		secrets[e.ID] = k
		atA <- func() error { return put(a, e, "client 127.0.0.1", i) }
		must(put(b, e, "link A", i))
		clock.Advance(time.Second / rate)
		if i%fetchAt == fetchAt-1 {
			fetch(i)
		}
		if i%(60*rate) == 0 {
			atA <- func() error { _, _, err := a.Purge(); return err }
			_, _, err := b.Purge()
			must(err)
		}
		if len(doneA) > 0 {
			break // A failed: stopA reports it
		}
	}
	fetch(total)
	must(stopA())
	if delivered != total || len(secrets) != 0 {
		t.Fatalf("delivered %d of %d", delivered, total)
	}
	for _, s := range []*testStore{a, b} {
		if left, _ := s.Mailbox(bob, 0); len(left) != 1 || !bytes.Equal(left[0].Destination, bob) || left[0].Kind != schemas.Envelope_Kind_bundle {
			t.Fatalf("after delivery the mailbox holds %d envelopes, want only the bundle", len(left))
		}
	}
	st := a.Stats()
	t.Logf("%d messages in %v; A holds %d envelopes, %d of %d receipt bytes, %d tombstones",
		total, time.Since(start).Round(time.Millisecond), st.Envelopes, st.ReceiptBytes, st.MaxReceiptBytes, st.Tombstones)
}
