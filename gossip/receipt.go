package gossip

import (
	"crypto/sha256"
	"crypto/subtle"
	"fmt"

	"github.com/quicproquo/qpq/schemas"
)

// receiptLabel separates receipt tags from every other hash. Senders put
// ReceiptTag(k) in a dm's receiptTag; the recipient reveals k to delete it.
const receiptLabel = "qpq receipt v1\x00"

// SecretLen is the length of a receipt secret.
const SecretLen = 32

// ReceiptTag returns H(k), the tag that a receipt revealing k deletes.
func ReceiptTag(k []byte) [TagLen]byte {
	h := sha256.New()
	h.Write([]byte(receiptLabel))
	h.Write(k)
	var t [TagLen]byte
	h.Sum(t[:0])
	return t
}

// NewReceipt builds the receipt envelope that reveals secret: destination
// is the tag it deletes, the payload is the secret padded to one block.
func NewReceipt(secret []byte, ttlSeconds uint32, hops uint8) (Envelope, error) {
	if len(secret) != SecretLen {
		return Envelope{}, fmt.Errorf("receipt secret is %d bytes, want %d", len(secret), SecretLen)
	}
	tag := ReceiptTag(secret)
	payload := make([]byte, PadBlock)
	copy(payload, secret)
	e := Envelope{Kind: schemas.Envelope_Kind_receipt, Destination: tag[:], Payload: payload, TTLSeconds: ttlSeconds, HopLimit: hops}
	e.ID = ComputeID(e.Kind, e.Destination, nil, e.Payload)
	return e, nil
}

// ReceiptSecret returns the secret a receipt envelope reveals, after
// checking that it hashes to the destination and the padding is zero. A
// receipt that fails is forged: nobody without k can make one.
func ReceiptSecret(e Envelope) ([]byte, error) {
	if e.Kind != schemas.Envelope_Kind_receipt || len(e.Payload) != PadBlock {
		return nil, fmt.Errorf("%w: not a receipt", ErrMalformed)
	}
	k := e.Payload[:SecretLen]
	for _, b := range e.Payload[SecretLen:] {
		if b != 0 {
			return nil, fmt.Errorf("%w: receipt padding is not zero", ErrMalformed)
		}
	}
	tag := ReceiptTag(k)
	if subtle.ConstantTimeCompare(tag[:], e.Destination) != 1 {
		return nil, fmt.Errorf("%w: receipt secret does not match its tag", ErrMalformed)
	}
	return k, nil
}
