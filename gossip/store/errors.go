package store

import "errors"

// Errors the store returns, always wrapped with the numbers or the path
// that explain them; compare with errors.Is.
var (
	// ErrFull is returned by Put when the envelope would take the store,
	// or the budget of its kind (messages, receipts, bundles,
	// descriptors), past its limit. The store never evicts an unexpired
	// envelope to make room: the sender keeps its copy and tries again
	// later.
	ErrFull = errors.New("store full")

	// ErrSourceFull is returned by Put when the source (a client or a
	// link) holds its share already: Options.MaxPerSource, its fair share
	// of a budget that is more than half full, or MaxPerMailboxSource of
	// the destination's mailbox (then the error wraps ErrMailboxQuota
	// too). Others still get in; a client should tell its user that the
	// node is full for this sender for now.
	ErrSourceFull = errors.New("store full for this source")

	// ErrSourceQuota is ErrSourceFull under its old name.
	//
	// Deprecated: use ErrSourceFull.
	ErrSourceQuota = ErrSourceFull

	// ErrMailboxQuota is returned by Put when the destination's mailbox
	// already holds Options.MaxPerMailbox bytes.
	ErrMailboxQuota = errors.New("mailbox over its store quota")

	// ErrExpired is returned by Put for an envelope whose TTL is zero:
	// there is no time left to hold it.
	ErrExpired = errors.New("envelope has no TTL left")

	// ErrLocked is returned by Open when another process (another node)
	// holds the file's lock past Options.LockTimeout.
	ErrLocked = errors.New("file is held by another node")

	// ErrCorrupt is returned by Open for a file that is not a store, or
	// one that is damaged. A damaged record found later is removed and
	// counted (Stats.Damaged) instead: the rest is still delivered.
	ErrCorrupt = errors.New("file is corrupt")

	// ErrClosed is returned by every method called after Close.
	ErrClosed = errors.New("store closed")
)
