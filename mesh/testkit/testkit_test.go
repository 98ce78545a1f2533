package testkit

import (
	"fmt"
	"testing"
	"time"
)

func TestClockMovesOnlyWhenAdvanced(t *testing.T) {
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	c := NewClock(start)
	if !c.Now().Equal(start) {
		t.Fatalf("now = %v, want %v", c.Now(), start)
	}
	c.Advance(time.Hour)
	if got := c.Now().Sub(start); got != time.Hour {
		t.Fatalf("advanced by %v, want 1h", got)
	}
}

// recTB records what a check reports instead of failing the real test.
type recTB struct {
	testing.TB
	cleanups []func()
	errs     []string
}

func (r *recTB) Helper()          {}
func (r *recTB) Cleanup(f func()) { r.cleanups = append(r.cleanups, f) }
func (r *recTB) Errorf(f string, a ...any) {
	r.errs = append(r.errs, fmt.Sprintf(f, a...))
}

func (r *recTB) end() {
	for i := len(r.cleanups) - 1; i >= 0; i-- {
		r.cleanups[i]()
	}
}

func TestLeakCheckSeesALeftGoroutineAndNotAStoppedOne(t *testing.T) {
	defer func(g time.Duration) { leakGrace = g }(leakGrace)
	leakGrace = 100 * time.Millisecond
	stop := make(chan struct{})
	r := &recTB{TB: t}
	LeakCheck(r)
	go func() { <-stop }()
	r.end()
	close(stop)
	if len(r.errs) != 1 {
		t.Fatalf("a goroutine left running: %d reports, want 1", len(r.errs))
	}

	r = &recTB{TB: t}
	LeakCheck(r)
	done := make(chan struct{})
	go func() { close(done) }()
	<-done
	r.end()
	if len(r.errs) != 0 {
		t.Fatalf("no goroutine left: got %v", r.errs)
	}
}

func TestSettleWaitsForQuiet(t *testing.T) {
	busy := 5
	Settle(t, time.Second, "the counter", func() bool { busy--; return busy < 0 }, nil)
	if busy > -settlePolls {
		t.Fatalf("settled after %d quiet polls, want %d", -busy, settlePolls)
	}
}
