// Package gossiptest builds valid envelopes for tests: direct messages,
// broadcasts, receipts and signed kinds with correct ids and random
// contents. It is for tests only: no non-test code imports it, so it never
// reaches the router binary. (The gossip package's own tests cannot import
// it, as it imports gossip; they keep their one sample.)
package gossiptest

import (
	"crypto/rand"
	"testing"

	"github.com/quicproquo/qpq/gossip"
	"github.com/quicproquo/qpq/schemas"
)

// Random returns n random bytes.
func Random(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

// DM makes a direct message to dest with receipt tag tag (each random
// when nil), a random payload of blocks pad blocks, and hop limit 16.
func DM(dest, tag []byte, ttl uint32, blocks int) gossip.Envelope {
	if dest == nil {
		dest = Random(gossip.DestLen)
	}
	if tag == nil {
		tag = Random(gossip.TagLen)
	}
	e := gossip.Envelope{Kind: schemas.Envelope_Kind_dm, Destination: dest, ReceiptTag: tag,
		Payload: Random(blocks * gossip.PadBlock), TTLSeconds: ttl, HopLimit: 16}
	e.ID = gossip.ComputeID(e.Kind, e.Destination, e.ReceiptTag, e.Payload)
	return e
}

// Broadcast makes a channel message to channel id dest (random when nil)
// with one random pad block and hop limit 3.
func Broadcast(dest []byte, ttl uint32) gossip.Envelope {
	if dest == nil {
		dest = Random(gossip.DestLen)
	}
	e := gossip.Envelope{Kind: schemas.Envelope_Kind_broadcast, Destination: dest,
		Payload: Random(gossip.PadBlock), TTLSeconds: ttl, HopLimit: 3}
	e.ID = gossip.ComputeID(e.Kind, e.Destination, nil, e.Payload)
	return e
}

// Receipt makes a receipt for a random secret, with a 7-day TTL and hop
// limit 16.
func Receipt(t testing.TB) gossip.Envelope {
	t.Helper()
	r, err := gossip.NewReceipt(Random(gossip.SecretLen), 7*24*3600, 16)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// Signed makes a bundle or descriptor envelope of blocks random pad
// blocks, 30-day TTL, hop limit 16. Its signature is not valid: for
// stores, which do not check it (relay does).
func Signed(kind schemas.Envelope_Kind, blocks int) gossip.Envelope {
	e := gossip.Envelope{Kind: kind, Destination: Random(gossip.DestLen), Payload: Random(blocks * gossip.PadBlock),
		TTLSeconds: 30 * 24 * 3600, HopLimit: 16}
	e.ID = gossip.ComputeID(e.Kind, e.Destination, nil, e.Payload)
	return e
}

// Hops returns e with hop limit h (the id does not cover the hop limit).
func Hops(e gossip.Envelope, h uint8) gossip.Envelope {
	e.HopLimit = h
	return e
}
