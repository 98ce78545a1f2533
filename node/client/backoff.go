package client

import (
	"math/rand/v2"
	"time"
)

// Backoff spaces reconnection attempts: exponential from Min to Max with
// full jitter in the upper half, so many clients of a restarted node do
// not redial in step. The zero value uses 250 ms to 30 s.
type Backoff struct {
	Min, Max time.Duration // zero: 250 ms and 30 s

	next time.Duration
}

// Next returns how long to wait before the next attempt.
func (b *Backoff) Next() time.Duration {
	lo, hi := b.Min, b.Max
	if lo <= 0 {
		lo = 250 * time.Millisecond
	}
	if hi <= 0 {
		hi = 30 * time.Second
	}
	if b.next < lo {
		b.next = lo
	}
	d := b.next
	if b.next *= 2; b.next > hi {
		b.next = hi
	}
	// Between d/2 and d.
	return d/2 + time.Duration(rand.Int64N(int64(d/2)+1))
}

// Reset starts again from Min (after a success).
func (b *Backoff) Reset() { b.next = 0 }
