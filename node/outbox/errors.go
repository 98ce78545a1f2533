package outbox

import "errors"

// Errors the outbox returns, wrapped with context; compare with errors.Is.
// A file held by another process too long is atrest.ErrBusy.
var (
	// ErrFull is returned by Add when queued messages fill the outbox
	// (entries or bytes): nothing queued is ever dropped to make room.
	ErrFull = errors.New("the outbox is full")
	// ErrWrongKey is returned by Open when the file was written under
	// another identity's key (or is damaged).
	ErrWrongKey = errors.New("the outbox was written under another identity's key")
	// ErrNotFound is returned for an entry the outbox does not hold.
	ErrNotFound = errors.New("no such outbox entry")
	// ErrNoRecipient is returned by Add for a message with neither a
	// recipient nor a channel, or with both.
	ErrNoRecipient = errors.New("a message needs exactly one of a recipient and a channel")
)
