package relay

import "sync"

// note wakes every waiter at once: a waiter takes the current channel,
// fire closes it and the next waiter gets a fresh one. Nothing is
// registered per waiter, so a waiter that leaves (its client gone) leaves
// nothing behind, and a node with no waiters allocates nothing per fire.
// The zero value is ready.
type note struct {
	mu sync.Mutex
	ch chan struct{}
}

func (n *note) wait() <-chan struct{} {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.ch == nil {
		n.ch = make(chan struct{})
	}
	return n.ch
}

func (n *note) fire() {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.ch != nil {
		close(n.ch)
		n.ch = nil
	}
}

// NextReceipt returns a channel closed when the engine next stores a
// receipt (from a client's ack or a neighbour). Take it before reading
// the store's receipts, so one stored in between is not missed.
func (e *Engine) NextReceipt() <-chan struct{} { return e.receipts.wait() }
