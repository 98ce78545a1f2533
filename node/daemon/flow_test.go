package daemon_test

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/quicproquo/qpq/gossip"
	"github.com/quicproquo/qpq/mesh/identity"
	"github.com/quicproquo/qpq/node/client"
	"github.com/quicproquo/qpq/node/e2e"
	"github.com/quicproquo/qpq/schemas"

	"github.com/quicproquo/qpq/node/daemon/daemontest"

	"github.com/quicproquo/qpq/mesh/testkit"
)

// TestFlowTwoNodesEveryMessageArrives runs issue 9's honest traffic over
// two real nodes on loopback: a client sends DMs through node A to a user
// whose client fetches and acknowledges them at node B, so every ack
// makes a receipt at B that travels back to A. The stores are small
// (512 KiB), so with the old per-source quotas B's own receipts filled
// its node-local share after about 160 messages and everything stopped;
// 400 messages (the store-level TestFlowTwoNodes carries 30,000) must all
// arrive, each once. A window of messages in flight keeps the sender
// honest: it never runs ahead of delivery by more than a user would.
func TestFlowTwoNodesEveryMessageArrives(t *testing.T) {
	testkit.LeakCheck(t)
	const (
		total  = 400
		window = 16
	)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	dir := t.TempDir()
	cb, ca := daemontest.Config(dir, "b"), daemontest.Config(dir, "a")
	cb.StoreMaxBytes, ca.StoreMaxBytes = 512<<10, 512<<10
	ns := daemontest.Line(t, cb, ca)
	b, a := ns[0].D, ns[1].D
	ids := []*identity.Node{ns[0].ID, ns[1].ID}

	bob := e2e.NewUser()
	signed, err := bob.SignedBundle(1, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	atB, err := client.Dial(ctx, b.Addr(), ids[0].Fingerprint())
	if err != nil {
		t.Fatal(err)
	}
	defer atB.Close()
	mb, err := atB.Authenticate(ctx, bob, signed)
	if err != nil {
		t.Fatal(err)
	}
	atA, err := client.Dial(ctx, a.Addr(), ids[1].Fingerprint())
	if err != nil {
		t.Fatal(err)
	}
	defer atA.Close()

	var mu sync.Mutex
	secrets := map[gossip.ID][]byte{} // sent, not yet received
	acked := make(chan int, total)
	recvErr := make(chan error, 1)
	go func() {
		got := 0
		for got < total {
			envs, err := mb.Fetch(ctx, 64, 5*time.Second)
			if err != nil {
				recvErr <- fmt.Errorf("fetch after %d messages: %w", got, err)
				return
			}
			var ks [][]byte
			mu.Lock()
			for _, e := range envs {
				k, ok := secrets[e.ID]
				if !ok {
					mu.Unlock()
					recvErr <- fmt.Errorf("message %v fetched twice, or never sent", e.ID)
					return
				}
				delete(secrets, e.ID)
				ks = append(ks, k)
			}
			mu.Unlock()
			if len(ks) == 0 {
				continue
			}
			if _, err := mb.Ack(ctx, ks); err != nil {
				recvErr <- fmt.Errorf("ack after %d messages: %w", got, err)
				return
			}
			got += len(ks)
			acked <- len(ks)
		}
		recvErr <- nil
	}()

	received, sent := 0, 0
	wait := func() {
		select {
		case n := <-acked:
			received += n
		case err := <-recvErr:
			if err == nil {
				err = errors.New("receiver ended early")
			}
			t.Fatalf("%d sent, %d received: %v", sent, received, err)
		case <-ctx.Done():
			t.Fatalf("%d of %d messages arrived", received, total)
		}
	}
	dest := bob.Fingerprint()
	for ; sent < total; sent++ {
		for sent-received >= window {
			wait()
		}
		k := make([]byte, gossip.SecretLen)
		rand.Read(k)
		tag := gossip.ReceiptTag(k)
		e := gossip.Envelope{Kind: schemas.Envelope_Kind_dm, Destination: dest[:], ReceiptTag: tag[:],
			Payload: make([]byte, gossip.PadBlock), TTLSeconds: 7 * 24 * 3600, HopLimit: 8}
		rand.Read(e.Payload)
		e.ID = gossip.ComputeID(e.Kind, e.Destination, e.ReceiptTag, e.Payload)
		mu.Lock()
		secrets[e.ID] = k
		mu.Unlock()
		if stored, err := atA.Enqueue(ctx, e); err != nil || !stored {
			t.Fatalf("message %d (%d received): enqueue: stored=%v err=%v", sent, received, stored, err)
		}
	}
	for received < total {
		wait()
	}
	if err := <-recvErr; err != nil {
		t.Fatal(err)
	}
}
