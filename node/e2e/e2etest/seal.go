// Package e2etest builds sealed direct messages for tests that need a
// real recipient to open them. It is for tests only: no non-test code
// imports it, so it never reaches the router binary.
package e2etest

import (
	"testing"
	"time"

	"github.com/quicproquo/qpq/gossip"
	"github.com/quicproquo/qpq/node/e2e"
	"github.com/quicproquo/qpq/schemas"
)

// SealDM seals body from from to the bundle to and wraps it as a DM
// envelope (TTL 1 h, hop limit 8), as `qpq send` would.
func SealDM(t testing.TB, from *e2e.User, to e2e.Bundle, body []byte) gossip.Envelope {
	t.Helper()
	s, err := e2e.SealDM(from, to, body, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	env := gossip.Envelope{Kind: schemas.Envelope_Kind_dm, Destination: append([]byte(nil), to.Fingerprint[:]...),
		TTLSeconds: 3600, HopLimit: 8, ReceiptTag: append([]byte(nil), s.ReceiptTag[:]...), Payload: s.Payload}
	env.ID = gossip.ComputeID(env.Kind, env.Destination, env.ReceiptTag, env.Payload)
	return env
}

// BundleOf is u's verified bundle, as a sender would hold it.
func BundleOf(t testing.TB, u *e2e.User) e2e.Bundle {
	t.Helper()
	signed, err := u.SignedBundle(1, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	b, err := e2e.VerifyBundle(signed)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
