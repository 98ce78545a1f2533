// Package outbox is the user's offline outbox (issue 11, items 3 and 4):
// a message is written to it, sealed under an envelope id fixed at that
// moment, before it is sent; a Sender (re)sends what is queued over a
// client session until a node has stored it or its TTL ends. Sending one
// envelope again after a crash or a reconnection cannot show it twice:
// the id stays the same, nodes keep one copy per id, and the reader shows
// an id once.
//
// Each entry moves through the delivery states, the same words in the
// chat, `qpq send --wait`, `qpq outbox` and JSON: queued, stored,
// delivered, expired, failed.
//
// The file (HOME/outbox.db, bbolt) is encrypted at rest under the user's
// AtRestKey("outbox"): values are sealed, index keys are keyed hashes.
// It is opened for each operation and closed right after, so a chat left
// open and a scripted `qpq send` take turns instead of locking each other
// out; a file held longer than the timeout gives atrest.ErrBusy.
package outbox

// State is where a message is on its way; its string is the word shown.
type State string

// The delivery states.
const (
	// Queued: in the outbox, not yet held by any node (no node was
	// reachable, or none has answered yet).
	Queued State = "queued"
	// Stored: a node answered the enqueue; the mesh holds it.
	Stored State = "stored"
	// Delivered: the recipient's client fetched and acknowledged it (its
	// receipt was seen). Not "read": nobody can tell whether a person
	// read it. A sender the recipient blocked sees delivered too.
	Delivered State = "delivered"
	// Expired: its TTL passed without a receipt.
	Expired State = "expired"
	// Failed: it cannot be sent; Entry.Reason says why.
	Failed State = "failed"
)

// Final reports whether s never changes again.
func (s State) Final() bool { return s == Delivered || s == Expired || s == Failed }

// Valid reports whether s is one of the delivery states.
func (s State) Valid() bool {
	switch s {
	case Queued, Stored, Delivered, Expired, Failed:
		return true
	}
	return false
}
