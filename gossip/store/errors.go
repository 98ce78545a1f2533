package store

import "errors"

// Errors the store returns, always wrapped with the numbers or the path
// that explain them; compare with errors.Is.
var (
	// ErrFull is returned by Put when the envelope would take the store
	// past Options.MaxBytes. The store never evicts an unexpired envelope
	// to make room: the sender keeps its copy and tries again later.
	ErrFull = errors.New("store full")

	// ErrSourceQuota is returned by Put when the source (a client or a
	// link) already holds Options.MaxPerSource bytes in the store.
	ErrSourceQuota = errors.New("source over its store quota")

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
	// one that is damaged; by reads that find a record they cannot decode.
	ErrCorrupt = errors.New("file is corrupt")

	// ErrClosed is returned by every method called after Close.
	ErrClosed = errors.New("store closed")
)
