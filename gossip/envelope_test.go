package gossip

import (
	"bytes"
	"crypto/rand"
	"errors"
	"testing"

	"github.com/quicproquo/qpq/schemas"
)

func sampleDM(t testing.TB) Envelope {
	dest := make([]byte, DestLen)
	tag := make([]byte, TagLen)
	payload := make([]byte, 3*PadBlock)
	rand.Read(dest)
	rand.Read(tag)
	rand.Read(payload)
	e := Envelope{Kind: schemas.Envelope_Kind_dm, Destination: dest, ReceiptTag: tag, Payload: payload, TTLSeconds: 3600, HopLimit: 16}
	e.ID = ComputeID(e.Kind, dest, tag, payload)
	return e
}

func TestEnvelopeRoundTrip(t *testing.T) {
	e := sampleDM(t)
	b, err := e.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	got, err := Unmarshal(b)
	if err != nil {
		t.Fatalf("unmarshal: %v", err)
	}
	if got.ID != e.ID || got.Kind != e.Kind || got.TTLSeconds != 3600 || got.HopLimit != 16 ||
		!bytes.Equal(got.Payload, e.Payload) || !bytes.Equal(got.Destination, e.Destination) || !bytes.Equal(got.ReceiptTag, e.ReceiptTag) {
		t.Fatalf("round trip changed the envelope")
	}
}

func TestEnvelopeIDIgnoresTTLAndHops(t *testing.T) {
	e := sampleDM(t)
	e.TTLSeconds, e.HopLimit = 1, 0
	if err := e.Check(); err != nil {
		t.Fatalf("changing TTL and hops must keep the id valid: %v", err)
	}
}

func TestEnvelopeRejects(t *testing.T) {
	cases := []struct {
		name   string
		mutate func(*Envelope)
		want   error
	}{
		{"tampered payload", func(e *Envelope) { e.Payload[0] ^= 1 }, ErrBadID},
		{"unpadded payload", func(e *Envelope) {
			e.Payload = e.Payload[:300]
			e.ID = ComputeID(e.Kind, e.Destination, e.ReceiptTag, e.Payload)
		}, ErrMalformed},
		{"oversize payload", func(e *Envelope) {
			e.Payload = make([]byte, MaxPayload+PadBlock)
			e.ID = ComputeID(e.Kind, e.Destination, e.ReceiptTag, e.Payload)
		}, ErrMalformed},
		{"short destination", func(e *Envelope) { e.Destination = e.Destination[:5] }, ErrMalformed},
		{"dm without tag", func(e *Envelope) { e.ReceiptTag = nil }, ErrMalformed},
		{"unknown kind", func(e *Envelope) { e.Kind = 99 }, ErrMalformed},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e := sampleDM(t)
			c.mutate(&e)
			b, err := e.Marshal()
			if err != nil {
				t.Fatal(err)
			}
			if _, err := Unmarshal(b); !errors.Is(err, c.want) {
				t.Fatalf("got %v, want %v", err, c.want)
			}
		})
	}
}

func FuzzDecodeEnvelope(f *testing.F) {
	e := sampleDM(f)
	b, _ := e.Marshal()
	f.Add(b)
	f.Add([]byte{})
	f.Add([]byte{0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		e, err := Unmarshal(b)
		if err != nil {
			return
		}
		// Whatever decodes must be valid and survive a round trip.
		if err := e.Check(); err != nil {
			t.Fatalf("decoded envelope fails its own check: %v", err)
		}
		again, err := e.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := Unmarshal(again); err != nil {
			t.Fatalf("re-encoded envelope does not decode: %v", err)
		}
	})
}

// AppendMarshal must write exactly what Marshal writes (the store keeps
// these bytes and peers decode them), after what dst held.
func TestAppendMarshalIsMarshal(t *testing.T) {
	dm := sampleDM(t)
	bare := dm
	bare.Destination, bare.ReceiptTag = nil, nil
	for _, e := range []Envelope{dm, bare, {}} {
		want, err := e.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		prefix := []byte("header")
		got, err := e.AppendMarshal(prefix)
		if err != nil {
			t.Fatal(err)
		}
		if string(got[:len(prefix)]) != "header" || !bytes.Equal(got[len(prefix):], want) {
			t.Fatalf("AppendMarshal wrote %x after the prefix, Marshal %x", got[len(prefix):], want)
		}
	}
}
