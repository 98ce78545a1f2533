package testkit

import (
	"testing"
	"time"
)

// WaitFor polls cond until it holds, and fails the test if within passes
// first, saying what it waited for. Polls start at a millisecond and back
// off to 20 ms, so a quick condition is seen at once and a slow one does
// not spin a loaded CPU. Use it where the only event is an observable
// state (a store holding an id, a status count); prefer a channel where
// the code offers one.
func WaitFor(t testing.TB, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	pause := time.Millisecond
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", within, what)
		}
		time.Sleep(pause)
		pause = min(2*pause, 20*time.Millisecond)
	}
}

// settlePolls is how many polls in a row must see the system quiet: it
// covers the instant a worker has taken work off a queue but not yet
// shown it anywhere a probe can see.
const settlePolls = 10

// Settle waits until the system is quiet: quiet reports no work queued or
// in flight and progress (any counter that moves while work is done,
// such as store operations) stays the same, for settlePolls polls in a
// row, a millisecond apart. It fails the test if within passes first.
// This is the signal to use before asserting that something did NOT
// happen: once the network is quiet, nothing more will arrive, so a
// check for absence is final rather than a guess after a sleep. progress
// may be nil.
func Settle(t testing.TB, within time.Duration, what string, quiet func() bool, progress func() int64) {
	t.Helper()
	deadline := time.Now().Add(within)
	last, stable := int64(-1), 0
	for stable < settlePolls {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s to settle", within, what)
		}
		time.Sleep(time.Millisecond)
		var p int64
		if progress != nil {
			p = progress()
		}
		if quiet() && p == last {
			stable++
		} else {
			stable = 0
		}
		last = p
	}
}

// WaitForEvery is WaitFor polling every pause: for conditions that are
// costly to check, such as one that runs a process or queries a node.
func WaitForEvery(t testing.TB, within, pause time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", within, what)
		}
		time.Sleep(pause)
	}
}
