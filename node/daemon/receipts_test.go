package daemon

import (
	"bytes"
	"context"
	"crypto/rand"
	"testing"
	"time"

	"github.com/quicproquo/qpq/gossip/relay"
	"github.com/quicproquo/qpq/mesh/testkit"
	"github.com/quicproquo/qpq/node/client"
)

// ackRandom has a client of d acknowledge n made-up secrets (the node
// makes and stores a receipt for each, as for real ones) and returns them.
func ackRandom(t *testing.T, d *Daemon, n int) [][32]byte {
	t.Helper()
	var out [][32]byte
	var raw [][]byte
	for range n {
		var k [32]byte
		rand.Read(k[:])
		out = append(out, k)
		raw = append(raw, k[:])
	}
	if _, err := d.eng.Ack(raw, relay.Source{Client: "test"}); err != nil {
		t.Fatal(err)
	}
	return out
}

func sameSecrets(t *testing.T, what string, got, want [][32]byte) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d secrets, want %d", what, len(got), len(want))
	}
	for i := range got {
		if !bytes.Equal(got[i][:], want[i][:]) {
			t.Fatalf("%s: secret %d is %x, want %x", what, i, got[i][:4], want[i][:4])
		}
	}
}

// The receipts stream hands out every receipt once in arrival order,
// at most maxReceipts per call whatever limit the client asks for; the
// cursor resumes without repeats; a cursor the node never gave out reads
// from the oldest; a long poll is woken by a new receipt, gives up at its
// deadline, and ends when its client goes away.
func TestReceiptsStreamInOrderBoundedAndWoken(t *testing.T) {
	testkit.LeakCheck(t)
	old := maxReceipts
	t.Cleanup(func() { maxReceipts = old })
	maxReceipts = 3
	d := newDaemon(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := client.DialFrom(ctx, "127.0.0.1:0", d.Addr(), d.Fingerprint())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()

	got, start, err := c.Receipts(ctx, 0, 0, 0)
	if err != nil || len(got) != 0 {
		t.Fatalf("receipts of an empty node: %d, %v", len(got), err)
	}
	sent := ackRandom(t, d, 5)

	got, next, err := c.Receipts(ctx, start, 1<<30, 0)
	if err != nil {
		t.Fatal(err)
	}
	sameSecrets(t, "first call, a huge limit", got, sent[:3])
	got, next, err = c.Receipts(ctx, next, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	sameSecrets(t, "second call from its cursor", got, sent[3:])
	got, next, err = c.Receipts(ctx, next, 0, 0)
	if err != nil || len(got) != 0 {
		t.Fatalf("third call: %d secrets (%v), want none", len(got), err)
	}
	for _, bad := range []uint64{^uint64(0) - 1, 12345, next + 1<<20} {
		got, _, err := c.Receipts(ctx, bad, 2, 0)
		if err != nil {
			t.Fatalf("cursor %#x: %v", bad, err)
		}
		sameSecrets(t, "a cursor the node never gave out", got, sent[:2])
	}

	// The cursor "from now on" skips what is held.
	got, latest, err := c.Receipts(ctx, client.ReceiptsLatest, 0, 0)
	if err != nil || len(got) != 0 || latest != next {
		t.Fatalf("from now on: %d secrets, next %#x (the end is %#x), %v", len(got), latest, next, err)
	}

	// The deadline is honoured when nothing comes.
	t0 := time.Now()
	got, same, err := c.Receipts(ctx, next, 0, time.Second)
	if err != nil || len(got) != 0 || same != next {
		t.Fatalf("an empty long poll: %d secrets, next %#x (was %#x), %v", len(got), same, next, err)
	}
	if el := time.Since(t0); el < time.Second || el > 10*time.Second {
		t.Errorf("a 1 s long poll took %v", el)
	}

	// Woken by a new receipt, well before its minute.
	type answer struct {
		got [][32]byte
		err error
	}
	ans := make(chan answer, 1)
	go func() {
		got, _, err := c.Receipts(ctx, next, 0, time.Minute)
		ans <- answer{got, err}
	}()
	testkit.WaitFor(t, 10*time.Second, "the long poll to wait", func() bool { return d.waiting() == 1 })
	late := ackRandom(t, d, 1)
	select {
	case a := <-ans:
		if a.err != nil {
			t.Fatal(a.err)
		}
		sameSecrets(t, "the woken long poll", a.got, late)
	case <-time.After(15 * time.Second):
		t.Fatal("the long poll was not woken by a new receipt")
	}

	// A client that goes away mid-poll leaves no waiter behind.
	gone, err := client.DialFrom(ctx, "127.0.0.1:0", d.Addr(), d.Fingerprint())
	if err != nil {
		t.Fatal(err)
	}
	defer gone.Close()
	cur := uint64(0)
	for { // catch up, as a new watcher does
		got, n, err := gone.Receipts(ctx, cur, 0, 0)
		if err != nil {
			t.Fatal(err)
		}
		if cur = n; len(got) == 0 {
			break
		}
	}
	ended := make(chan struct{})
	go func() {
		defer close(ended)
		gone.Receipts(ctx, cur, 0, time.Minute)
	}()
	testkit.WaitFor(t, 10*time.Second, "the second long poll to wait", func() bool { return d.waiting() == 1 })
	gone.Close()
	<-ended
	testkit.WaitFor(t, 10*time.Second, "the node to end the gone client's poll", func() bool { return d.waiting() == 0 })

	// A poll waiting when the node shuts down ends with it.
	go func() {
		defer close(ans)
		_, _, err := c.Receipts(ctx, client.ReceiptsLatest, 0, time.Minute)
		ans <- answer{err: err}
	}()
	testkit.WaitFor(t, 10*time.Second, "a poll to wait", func() bool { return d.waiting() == 1 })
	t0 = time.Now()
	d.Close()
	<-ans
	if el := time.Since(t0); el > 10*time.Second {
		t.Errorf("the node took %v to end a waiting poll at shutdown", el)
	}
}
