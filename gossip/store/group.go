package store

import "sync"

// Group commit: Apply calls that arrive while a write transaction runs
// wait for it and then go together in the next one, so concurrent
// writers (pushes from several neighbours, enqueues from several
// clients) share a commit and its fsync instead of taking one each. Each
// call still returns only once its own ops are committed, with its own
// results; a failure of the file fails every call of that transaction.

// commitReq is one Apply call waiting for a transaction.
type commitReq struct {
	ops  []Op
	prep []prepared
	todo []int
	res  []Result // refusals from prepare on entry; every outcome on done
	err  error
	done bool // guarded by groupQueue.mu
}

// groupQueue holds the calls waiting for the next transaction.
type groupQueue struct {
	mu      sync.Mutex
	cond    sync.Cond // signalled when a transaction ends; L is &mu
	leading bool      // a call is committing a batch
	waiting []*commitReq
}

// groupCommit queues the call; the first caller to find no transaction
// under way commits everything queued (up to MaxBatch ops) in one, while
// the calls that arrive meanwhile wait for the next. Each returns once a
// transaction has committed (or failed) its own ops.
func (s *Store) groupCommit(ops []Op, prep []prepared, todo []int, res []Result) ([]Result, error) {
	r := &commitReq{ops: ops, prep: prep, todo: todo, res: res}
	q := &s.group
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.cond.L == nil {
		q.cond.L = &q.mu
	}
	q.waiting = append(q.waiting, r)
	for {
		for !r.done && q.leading {
			q.cond.Wait()
		}
		if r.done {
			return r.res, r.err
		}
		// Take calls in arrival order while they fit one batch; the
		// first always goes (each call is within MaxBatch on its own).
		n, total := 0, 0
		for n < len(q.waiting) && (n == 0 || total+len(q.waiting[n].ops) <= MaxBatch) {
			total += len(q.waiting[n].ops)
			n++
		}
		batch := q.waiting[:n:n]
		q.waiting = append([]*commitReq(nil), q.waiting[n:]...)
		q.leading = true
		q.mu.Unlock()
		s.mu.Lock()
		s.commitGroupLocked(batch)
		s.mu.Unlock()
		q.mu.Lock()
		for _, b := range batch {
			b.done = true
		}
		q.leading = false
		q.cond.Broadcast()
	}
}

// commitGroupLocked commits the calls of batch in one transaction and
// hands each its results; s.mu is held.
func (s *Store) commitGroupLocked(batch []*commitReq) {
	if len(batch) == 1 {
		b := batch[0]
		b.res, b.err = s.commitLocked(b.ops, b.prep, b.todo, b.res)
		return
	}
	var ops []Op
	var prep []prepared
	var todo []int
	var res []Result
	for _, b := range batch {
		off := len(ops)
		ops = append(ops, b.ops...)
		prep = append(prep, b.prep...)
		res = append(res, b.res...)
		for _, i := range b.todo {
			todo = append(todo, off+i)
		}
	}
	out, err := s.commitLocked(ops, prep, todo, res)
	off := 0
	for _, b := range batch {
		if err != nil {
			b.res, b.err = nil, err
		} else {
			b.res = out[off : off+len(b.ops) : off+len(b.ops)]
		}
		off += len(b.ops)
	}
}
