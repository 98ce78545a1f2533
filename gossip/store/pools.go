package store

import "github.com/quicproquo/qpq/schemas"

// pool is a class of kinds that shares one budget. Receipts, bundles and
// descriptors are small and replace or delete one another; the node makes
// many of them itself. Each has its own budget so that a flood of them
// (or the node's own steady stream of receipts) never starves messages,
// and a flood of messages never stops receipts from deleting delivered
// ones.
type pool uint8

const (
	poolMessage pool = iota // dm, broadcast, onion, decoy and any kind added later
	poolReceipt
	poolBundle
	poolDescriptor
	numPools
)

func poolOf(k schemas.Envelope_Kind) pool {
	switch k {
	case schemas.Envelope_Kind_receipt:
		return poolReceipt
	case schemas.Envelope_Kind_bundle:
		return poolBundle
	case schemas.Envelope_Kind_descriptor:
		return poolDescriptor
	}
	return poolMessage
}

func (p pool) String() string {
	return [...]string{"messages", "receipts", "bundles", "descriptors"}[p]
}
