package relay

import (
	"errors"
	"strings"
)

// Errors Accept and HandleRaise return, and one a Peer returns.
var (
	ErrRateLimited = errors.New("peer is sending too fast")
	ErrForged      = errors.New("forged or mismatched envelope")
	// ErrRaiseUnsupported is wrapped by Peer.Raise when the neighbour does
	// not serve raise; the engine then sends it no more raises.
	ErrRaiseUnsupported = errors.New("peer does not serve raise")
)

// ErrNotLinked: a summary came from a neighbour whose link is not
// registered (yet).
var ErrNotLinked = errors.New("summary from a neighbour not linked yet")

// ErrStale: a bundle or descriptor no newer than one already held.
var ErrStale = errors.New("an equal or newer bundle is held")

// ErrBadSummary: a summary whose key or filter is malformed, or whose
// filter claims more than it holds or than a summary may hold.
var ErrBadSummary = errors.New("malformed summary")

// IsRateLimited reports whether err is a neighbour's refusal for sending
// too fast: ErrRateLimited here, or its text in an error that crossed the
// wire from a node that answers pushes that way (protocol version 1).
func IsRateLimited(err error) bool {
	return err != nil && (errors.Is(err, ErrRateLimited) || strings.Contains(err.Error(), ErrRateLimited.Error()))
}
