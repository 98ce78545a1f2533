package client

import (
	"context"
	"errors"
	"fmt"
	"math"
	"time"

	"capnproto.org/go/capnp/v3"

	"github.com/quicproquo/qpq/gossip"
	"github.com/quicproquo/qpq/mesh/identity"
	"github.com/quicproquo/qpq/node/e2e"
	"github.com/quicproquo/qpq/schemas"
)

// ReceiptsLatest is the cursor that asks Receipts for none of the
// receipts held now, only the cursor after them: take it before sending
// to wait only for receipts that arrive later.
const ReceiptsLatest = ^uint64(0)

// ErrReceiptsUnsupported is returned by Receipts when the node is too old
// to stream receipts.
var ErrReceiptsUnsupported = errors.New("the node does not stream receipts (an older qpq)")

// Receipts returns the receipt secrets the node has seen after cursor
// after (0: from the oldest it holds), at most limit of them (0: the
// node's maximum), waiting up to wait when there are none, and the cursor
// to pass next time. The node is never told which tags the caller cares
// about: the caller matches them locally (see WatchReceipts).
func (c *Client) Receipts(ctx context.Context, after uint64, limit int, wait time.Duration) (secrets [][32]byte, next uint64, err error) {
	if limit < 0 {
		limit = 0
	}
	fut, release := c.node.Receipts(ctx, func(p schemas.Node_receipts_Params) error {
		p.SetAfter(after)
		p.SetLimit(uint32(min(uint64(limit), math.MaxUint32)))
		p.SetWaitSeconds(uint32(wait / time.Second))
		return nil
	})
	defer release()
	res, err := fut.Struct()
	if err != nil {
		if capnp.IsUnimplemented(err) {
			return nil, after, fmt.Errorf("receipts from node %s: %w", c.addr, ErrReceiptsUnsupported)
		}
		return nil, after, fmt.Errorf("receipts from node %s: %w", c.addr, err)
	}
	list, err := res.Secrets()
	if err != nil {
		return nil, after, fmt.Errorf("receipts from node %s: %w", c.addr, err)
	}
	secrets = make([][32]byte, 0, list.Len())
	for i := 0; i < list.Len(); i++ {
		k, err := list.At(i)
		if err != nil || len(k) != gossip.SecretLen {
			return nil, after, fmt.Errorf("receipts from node %s: secret %d is not %d bytes", c.addr, i, gossip.SecretLen)
		}
		secrets = append(secrets, [32]byte(k))
	}
	return secrets, res.Next(), nil
}

// Watch timing; variables for tests.
var (
	// receiptsWait is the long poll of each receipts call.
	receiptsWait = time.Minute
	// receiptsCallTimeout is added to receiptsWait for each call.
	receiptsCallTimeout = 15 * time.Second
	// receiptsPause is the first pause after the node refused a call
	// while still answering (busy, too many waits, an old node), doubling
	// to receiptsMaxPause: such a node is asked again later, not
	// abandoned, and the Session shared with a Reader is left alone.
	receiptsPause    = time.Second
	receiptsMaxPause = time.Minute
)

// WatchReceipts follows the receipts seen by the node of s and calls h
// with the receipt tag of each (e2e.ReceiptTagOf of its secret); the
// caller compares them with the tags of the DMs it sent. h runs on this
// goroutine, one call at a time, and must be idempotent: a tag may come
// again (after a reconnection, on another node). When a call fails and
// the node no longer answers, the connection is failed on s and the
// watch goes on with the next one s.Get gives; on a node with another
// key the cursor starts again from 0. It returns nil when ctx ends, or
// the error of s.Get (the session was closed or gave up).
func WatchReceipts(ctx context.Context, s *Session, h func(tag [32]byte)) error {
	var (
		cursor uint64
		node   identity.Fingerprint
		pause  time.Duration
	)
	for ctx.Err() == nil {
		c, err := s.Get(ctx)
		if err != nil {
			return quiet(ctx, err)
		}
		if fp := c.Client.NodeFingerprint(); !fp.Equal(node) {
			node, cursor = fp, 0
		}
		cctx, cancel := context.WithTimeout(ctx, receiptsWait+receiptsCallTimeout)
		secrets, next, err := c.Client.Receipts(cctx, cursor, 0, receiptsWait)
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if !errors.Is(err, ErrReceiptsUnsupported) && !stillAnswers(ctx, c) {
				s.Fail(c, err)
				continue
			}
			pause = min(max(2*pause, receiptsPause), receiptsMaxPause)
			if !sleepCtx(ctx, pause) {
				return nil
			}
			continue
		}
		pause = 0
		for _, k := range secrets {
			h(e2e.ReceiptTagOf(k))
		}
		cursor = next
	}
	return nil
}

// stillAnswers reports whether the node of c answers a health probe: a
// call it refused is then its answer, not a lost connection.
func stillAnswers(ctx context.Context, c *Conn) bool {
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	return c.Client.Ping(pctx) == nil
}

// sleepCtx waits d or until ctx ends; it reports whether d passed.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
