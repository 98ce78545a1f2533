package testkit

import (
	"sync"
	"time"
)

// Clock is a wall clock that moves only when a test advances it. Its
// readings carry no monotonic part, so differences between them are
// exactly what the test set. Now fits store.Clock, and the method value
// c.Now fits relay's and seen's Options.Now. Safe for concurrent use.
type Clock struct {
	mu  sync.Mutex // guards now
	now time.Time
}

// NewClock returns a clock reading start (its monotonic part stripped).
func NewClock(start time.Time) *Clock {
	return &Clock{now: start.Round(0)}
}

// Now returns the clock's reading.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// Advance moves the clock forward by d.
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}
