package testkit

import (
	"bytes"
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"
)

// leakGrace is how long LeakCheck lets goroutines wind down after the
// test's other cleanups (QUIC connections close their run loops a moment
// after Close returns).
var leakGrace = 5 * time.Second

// maxReported bounds the stacks a failed check prints.
const maxReported = 10

// backgroundFrames name goroutines that the runtime, the testing package
// or a library start once per process and never stop; they are not
// leaks of the test.
var backgroundFrames = []string{
	"testing.(*T).Run",
	"testing.(*M).",
	"testing.tRunner",
	"testing.runTests",
	"runtime.goexit0",
	"os/signal.signal_recv",
	"os/signal.loop",
	"runtime.ReadTrace",
	"runtime/trace.Start",
	"runtime.ensureSigM",
	"created by runtime.gc",
	"created by runtime/pprof.",
	// quic-go's and capnp's process-wide helpers, started once.
	"github.com/quic-go/quic-go.(*packetHandlerMap).runCloseQueue",
	"capnproto.org/go/capnp/v3/exp/bufferpool",
}

// LeakCheck fails the test if goroutines started during it are still
// running after its other cleanups and a grace period. Call it first in
// the test (its cleanup then runs last, after every Close the test
// registered). Goroutines that existed when it was called, and the
// process-wide background ones listed above, are ignored. Tests that
// call it must not run in parallel with others.
func LeakCheck(t testing.TB) {
	t.Helper()
	before := map[string]bool{}
	for _, g := range goroutines() {
		before[g.id] = true
	}
	t.Cleanup(func() {
		var left []goroutine
		deadline := time.Now().Add(leakGrace)
		for {
			left = left[:0]
			for _, g := range goroutines() {
				if !before[g.id] && !g.background() {
					left = append(left, g)
				}
			}
			if len(left) == 0 || time.Now().After(deadline) {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		if len(left) == 0 {
			return
		}
		var b strings.Builder
		for i, g := range left {
			if i == maxReported {
				fmt.Fprintf(&b, "\n(and %d more)", len(left)-i)
				break
			}
			fmt.Fprintf(&b, "\n%s\n", g.stack)
		}
		t.Errorf("%d goroutines still running %v after the test ended:%s", len(left), leakGrace, b.String())
	})
}

type goroutine struct {
	id    string // "goroutine 42"
	stack string
}

// background reports whether g is one of the process-wide goroutines.
func (g goroutine) background() bool {
	for _, f := range backgroundFrames {
		if strings.Contains(g.stack, f) {
			return true
		}
	}
	return false
}

// goroutines returns every goroutine's stack but the caller's.
func goroutines() []goroutine {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	var out []goroutine
	for i, s := range bytes.Split(buf, []byte("\n\n")) {
		if i == 0 {
			continue // this goroutine
		}
		st := string(s)
		head, _, _ := strings.Cut(st, " [")
		out = append(out, goroutine{id: head, stack: st})
	}
	return out
}
