package relay

import (
	"time"

	"github.com/quicproquo/qpq/gossip"
	"github.com/quicproquo/qpq/mesh/identity"
	"github.com/quicproquo/qpq/schemas"
)

// Mailbox returns up to limit dms addressed to user, oldest first, and
// at most maxBytes of payload (at least one envelope).
func (e *Engine) Mailbox(user identity.Fingerprint, limit, maxBytes int) ([]gossip.Envelope, error) {
	all, err := e.o.Store.Mailbox(user[:], 0)
	if err != nil {
		return nil, err
	}
	var out []gossip.Envelope
	size := 0
	for _, x := range all {
		if x.Kind != schemas.Envelope_Kind_dm {
			continue
		}
		if len(out) > 0 && size+len(x.Payload) > maxBytes {
			break
		}
		out = append(out, x)
		size += len(x.Payload)
		if limit > 0 && len(out) == limit {
			break
		}
	}
	return out, nil
}

// Channel returns broadcasts held for the given channel ids, oldest
// first: for channel i those held after the envelope after[i], or the
// newest limit when after[i] is zero or no longer held. At most limit
// envelopes and maxBytes of payload per call (at least one envelope).
func (e *Engine) Channel(ids [][32]byte, after []gossip.ID, limit, maxBytes int) ([]gossip.Envelope, error) {
	var out []gossip.Envelope
	size := 0
	for i, id := range ids {
		all, err := e.o.Store.Mailbox(id[:], 0)
		if err != nil {
			return nil, err
		}
		var bs []gossip.Envelope
		for _, x := range all {
			if x.Kind == schemas.Envelope_Kind_broadcast {
				bs = append(bs, x)
			}
		}
		start := max(0, len(bs)-limit)
		if i < len(after) && after[i] != (gossip.ID{}) {
			for j, x := range bs {
				if x.ID == after[i] {
					start = j + 1
					break
				}
			}
		}
		for _, x := range bs[start:] {
			if len(out) > 0 && (size+len(x.Payload) > maxBytes || len(out) == limit) {
				return out, nil
			}
			out = append(out, x)
			size += len(x.Payload)
		}
	}
	return out, nil
}

// Ack applies receipt secrets revealed by a recipient: deletes the tagged
// envelopes here and spreads a receipt so every node deletes its copy.
// The receipts are stored as coming from src (the acknowledging client's
// address), so a client acking made-up secrets fills only its own share
// of the receipt budget.
func (e *Engine) Ack(secrets [][]byte, src Source) (deleted int, err error) {
	rs := make([]gossip.Envelope, 0, len(secrets))
	for _, k := range secrets {
		r, err := gossip.NewReceipt(k, uint32(e.o.ReceiptTTL/time.Second), e.o.ReceiptHops)
		if err != nil {
			return 0, err
		}
		rs = append(rs, r)
	}
	// One commit for the lot: each receipt deletes what its secret tags
	// and is stored to travel on.
	out, err := e.admitBatch(rs, src)
	if err != nil {
		return 0, err
	}
	for _, o := range out {
		deleted += o.deleted
		if o.err != nil && err == nil {
			err = o.err
		}
	}
	return deleted, err
}

// Wait returns a channel that is signalled when a dm for dest arrives,
// and a function to stop waiting.
func (e *Engine) Wait(dest []byte) (<-chan struct{}, func()) {
	var key [32]byte
	copy(key[:], dest)
	ch := make(chan struct{}, 1)
	e.waitersMu.Lock()
	if e.waiters[key] == nil {
		e.waiters[key] = map[chan struct{}]struct{}{}
	}
	e.waiters[key][ch] = struct{}{}
	e.waitersMu.Unlock()
	return ch, func() {
		e.waitersMu.Lock()
		delete(e.waiters[key], ch)
		if len(e.waiters[key]) == 0 {
			delete(e.waiters, key)
		}
		e.waitersMu.Unlock()
	}
}

func (e *Engine) wake(dest []byte) {
	var key [32]byte
	copy(key[:], dest)
	e.waitersMu.Lock()
	defer e.waitersMu.Unlock()
	for ch := range e.waiters[key] {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}
