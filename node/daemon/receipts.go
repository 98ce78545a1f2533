package daemon

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/quicproquo/qpq/schemas"
)

// maxReceipts bounds the secrets one receipts call returns: 32 bytes
// each, so an answer stays near 40 KiB, under fetchBytes. A variable for
// tests.
var maxReceipts = 1024

// receiptBatch is how long a woken long poll waits for more receipts
// before answering: receipts come in bursts (a recipient acknowledges
// a batch), and every waiter is woken by each, so this bounds how often
// one waiter reads the store to a few times a second.
const receiptBatch = 100 * time.Millisecond

// errShuttingDown ends the long polls waiting when the node stops.
var errShuttingDown = errors.New("node shutting down")

// Receipts streams the receipt secrets this node holds, in arrival order
// after the client's cursor, from the store (each receipt is kept there
// for its TTL within the receipt budget, so the stream survives
// restarts and costs no memory). No authentication: every receipt
// reaches every node, and asking for all of them says nothing about
// which one the caller waits for.
func (s *clientSession) Receipts(ctx context.Context, call schemas.Node_receipts) error {
	defer s.cc.begin()()
	if s.d.clients.busy() {
		return fmt.Errorf("receipts: %w", errBusy)
	}
	args := call.Args()
	after := args.After()
	limit := int(args.Limit())
	if limit <= 0 || limit > maxReceipts {
		limit = maxReceipts
	}
	wait := min(time.Duration(args.WaitSeconds())*time.Second, maxWait)
	// Take the wake-up before looking, so an arrival in between is not missed.
	arrived := s.d.eng.NextReceipt()
	secrets, next, err := s.d.st.Receipts(after, limit)
	// A read that found only expired or stale entries looks again from
	// where it stopped (bounded) before waiting.
	for try := 0; err == nil && len(secrets) == 0 && next != after && try < 4; try++ {
		after = next
		secrets, next, err = s.d.st.Receipts(after, limit)
	}
	if err != nil {
		return fmt.Errorf("receipts: %w", err)
	}
	if len(secrets) == 0 && wait > 0 {
		done, err := s.cc.startWait()
		if err != nil {
			return fmt.Errorf("receipts: %w", err)
		}
		defer done()
		call.Go() // let other calls on this connection proceed while we wait
		t := time.NewTimer(wait)
		defer t.Stop()
		select {
		case <-arrived:
			b := time.NewTimer(receiptBatch)
			select {
			case <-b.C:
			case <-ctx.Done():
			case <-s.d.ctx.Done():
			}
			b.Stop()
		case <-t.C:
		case <-ctx.Done():
			return ctx.Err()
		case <-s.d.ctx.Done():
			// An answer now would bring the client straight back.
			return fmt.Errorf("receipts: %w", errShuttingDown)
		}
		// From the cursor the first look returned: it is this node's even
		// when the client's was not.
		if secrets, next, err = s.d.st.Receipts(next, limit); err != nil {
			return fmt.Errorf("receipts: %w", err)
		}
	}
	res, err := call.AllocResults()
	if err != nil {
		return err
	}
	list, err := res.NewSecrets(int32(len(secrets)))
	if err != nil {
		return err
	}
	for i, k := range secrets {
		if err := list.Set(i, k); err != nil {
			return err
		}
	}
	res.SetNext(next)
	return nil
}
