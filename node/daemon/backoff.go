package daemon

import (
	"math/rand/v2"
	"time"
)

// backoff paces redials of a static peer: exponential growth with jitter so
// that routers rebooting together do not redial in lockstep.
type backoff struct {
	min, max time.Duration
	cur      time.Duration
	rand     func() float64 // in [0,1); injectable for tests
}

func newBackoff(min, max time.Duration) *backoff {
	return &backoff{min: min, max: max, rand: rand.Float64}
}

// next returns the wait before the next attempt: uniformly in
// [cur/2, cur), with cur doubling up to max.
func (b *backoff) next() time.Duration {
	if b.cur == 0 {
		b.cur = b.min
	}
	d := b.cur/2 + time.Duration(b.rand()*float64(b.cur/2))
	b.cur = min(b.cur*2, b.max)
	return d
}

// reset starts over after a link that came up.
func (b *backoff) reset() { b.cur = 0 }
