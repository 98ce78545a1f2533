package relay

// Limits of the neighbour protocol, defined once: gossip/wire refuses a
// received call over them, and the engine's sender batches stay under
// them.
const (
	// MaxPush bounds the envelopes of one push call a node accepts.
	MaxPush = 256
	// MaxRaises bounds the entries of one raise call (the schema's
	// comment states it).
	MaxRaises = 1024
	// MaxFilterBytes bounds a received summary filter (a million ids at
	// 1% is ~1.2 MB; the RPC message bound is lower still).
	MaxFilterBytes = 2 << 20
)

// Sender batches, under the limits above.
const (
	// pushBatch bounds the envelopes of one push we send.
	pushBatch = 32
	// pushBytes bounds one push's payloads, well under the RPC message
	// bound (link.MaxRPCMessage) even with one maximal envelope added.
	pushBytes = 96 << 10
	// raiseBatch bounds one raise call we send.
	raiseBatch = 256
)

// Checked at compile time: a sender batch over a receiver's limit would
// be refused whole.
var (
	_ [MaxPush - pushBatch]struct{}
	_ [MaxRaises - raiseBatch]struct{}
)
