package store

import (
	"sync"
	"testing"
	"time"

	"github.com/quicproquo/qpq/gossip"
	"github.com/quicproquo/qpq/gossip/gossiptest"
	"github.com/quicproquo/qpq/mesh/testkit"
)

// Apply calls that arrive while a transaction runs share the next one:
// 16 concurrent single-envelope calls cost two commits (the one under
// way, then all the others), each gets its own result, and every
// envelope is stored.
func TestConcurrentAppliesShareACommit(t *testing.T) {
	ts := openTest(t, Options{})
	const n = 16
	envs := make([]gossip.Envelope, n)
	for i := range envs {
		envs[i] = gossiptest.DM(nil, nil, 3600, 1)
	}
	before := ts.Commits()
	// Hold the transaction lock: the first call takes its batch and
	// waits for it; the others queue behind it.
	ts.mu.Lock()
	var wg sync.WaitGroup
	results := make([][]Result, n)
	errs := make([]error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i], errs[i] = ts.Apply([]Op{{Put: &envs[i], Source: "c"}})
		}()
	}
	testkit.WaitFor(t, 10*time.Second, "the other calls to queue", func() bool {
		ts.group.mu.Lock()
		defer ts.group.mu.Unlock()
		return ts.group.leading && len(ts.group.waiting) == n-1
	})
	ts.mu.Unlock()
	wg.Wait()
	for i := range n {
		if errs[i] != nil || len(results[i]) != 1 || !results[i][0].Added {
			t.Fatalf("call %d: %+v, %v; want its one envelope added", i, results[i], errs[i])
		}
		if !ts.Has(envs[i].ID) {
			t.Fatalf("envelope %d not stored", i)
		}
	}
	if got := ts.Commits() - before; got != 2 {
		t.Fatalf("%d concurrent calls took %d commits, want 2", n, got)
	}
}
