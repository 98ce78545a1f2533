package e2e

import (
	"testing"
	"time"
)

// A recipient on an older build publishes a bundle without readsInner and
// opens only version 1. The golden recipient.bundle is such a bundle (made
// by an earlier build): a DM sealed to it with a sequence and a TTL must
// come out as version 1, the same size as version 2, and open; a bundle of
// this build says it reads version 2 and gets the sequence.
func TestSealDMWithWritesWhatTheRecipientReads(t *testing.T) {
	recipient := loadGoldenUser(t, "recipient.key", nil)
	sender := loadGoldenUser(t, "sender.key", nil)
	body := []byte("hello from a newer build")
	meta := Meta{Seq: 7, TTL: time.Hour}

	old, err := VerifyBundle(readGolden(t, "recipient.bundle"))
	if err != nil {
		t.Fatal(err)
	}
	if old.ReadsInner != innerVersion1 {
		t.Fatalf("an older client's bundle reads as ReadsInner %d, want 1", old.ReadsInner)
	}
	s1, err := SealDMWith(sender, old, body, time.Now(), meta)
	if err != nil {
		t.Fatal(err)
	}
	o1, err := OpenDM(recipient, s1.Payload)
	if err != nil {
		t.Fatal(err)
	}
	if o1.Version != 1 || o1.Seq != 0 || o1.TTL != 0 || string(o1.Body) != string(body) {
		t.Fatalf("to an older client: version %d seq %d ttl %v body %q; want version 1 without seq or TTL", o1.Version, o1.Seq, o1.TTL, o1.Body)
	}

	signed, err := recipient.SignedBundle(2, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	cur, err := VerifyBundle(signed)
	if err != nil {
		t.Fatal(err)
	}
	if cur.ReadsInner != innerVersion2 {
		t.Fatalf("this build's bundle reads as ReadsInner %d, want 2", cur.ReadsInner)
	}
	s2, err := SealDMWith(sender, cur, body, time.Now(), meta)
	if err != nil {
		t.Fatal(err)
	}
	o2, err := OpenDM(recipient, s2.Payload)
	if err != nil {
		t.Fatal(err)
	}
	if o2.Version != 2 || o2.Seq != 7 || o2.TTL != time.Hour {
		t.Fatalf("to this build: version %d seq %d ttl %v; want 2, 7, 1h", o2.Version, o2.Seq, o2.TTL)
	}
	if len(s1.Payload) != len(s2.Payload) {
		t.Fatalf("version 1 payload %d bytes, version 2 %d: the size tells the versions apart", len(s1.Payload), len(s2.Payload))
	}
}
