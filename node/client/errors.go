package client

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"

	"github.com/quic-go/quic-go"
)

// Errors the client returns, wrapped with the address and what to do;
// compare with errors.Is.
var (
	// ErrNoNode is returned by Dial when nothing answered as a qpq node
	// at the address before the handshake timed out.
	ErrNoNode = errors.New("no qpq node answered")

	// ErrNodeFull is returned by Enqueue when the node refused the
	// envelope for lack of room for this sender (or this recipient).
	ErrNodeFull = errors.New("the node is full for this sender")
)

// quotaText is how the node's store quota refusals read over RPC, where
// only the text of the error arrives (gossip/store ErrSourceQuota and
// ErrMailboxQuota).
const quotaText = "over its store quota"

// noNodeError explains a dial that timed out.
func noNodeError(addr string, err error) error {
	port := addr
	if _, p, e := net.SplitHostPort(addr); e == nil {
		port = p
	}
	return fmt.Errorf("%w at %s: check that `qpq node` is running there, that the address and port are right, and that no firewall drops UDP port %s (%v)",
		ErrNoNode, addr, port, err)
}

// isNoAnswer reports whether a dial error means no QUIC peer answered
// (rather than a wrong key or a refusal).
func isNoAnswer(err error) bool {
	var idle *quic.IdleTimeoutError
	var hs *quic.HandshakeTimeoutError
	return errors.As(err, &idle) || errors.As(err, &hs) || errors.Is(err, context.DeadlineExceeded)
}

// enqueueError turns a node's quota refusal into ErrNodeFull.
func enqueueError(addr string, err error) error {
	if err == nil {
		return nil
	}
	if strings.Contains(err.Error(), quotaText) {
		who := "messages from you"
		if strings.Contains(err.Error(), "mailbox "+quotaText) {
			who = "more messages for this recipient"
		}
		return fmt.Errorf("%w: node %s has no room left for %s; retry later or use another node (%v)", ErrNodeFull, addr, who, err)
	}
	return err
}
