package relay

import (
	"context"
	"sync"

	"github.com/quicproquo/qpq/gossip"
)

// maxQueue bounds the ids waiting for one neighbour (32 bytes each: at
// most 512 KiB per neighbour, allocated only as it fills). A burst up to
// it waits for the link's pace instead of being left to anti-entropy.
const maxQueue = 1 << 14

// idQueue is one neighbour's send queue: FIFO, bounded, and empty until
// used, so an idle node with many links holds no queue memory.
type idQueue struct {
	mu    sync.Mutex
	ids   []gossip.ID // ids[head:] wait
	head  int
	ready chan struct{} // has a token while ids wait
	// overflowed is set when an id was refused for want of room: the
	// next summary round carries what was lost.
	overflowed bool
}

func newIDQueue() *idQueue { return &idQueue{ready: make(chan struct{}, 1)} }

// push appends id; false when the queue is full.
func (q *idQueue) push(id gossip.ID) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.ids)-q.head >= maxQueue {
		q.overflowed = true
		return false
	}
	if q.head > 0 && len(q.ids) == cap(q.ids) {
		// Reuse the room taken ids left at the front.
		n := copy(q.ids, q.ids[q.head:])
		q.ids, q.head = q.ids[:n], 0
	}
	q.ids = append(q.ids, id)
	select {
	case q.ready <- struct{}{}:
	default:
	}
	return true
}

// tryPop takes the oldest id, if any.
func (q *idQueue) tryPop() (gossip.ID, bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.head == len(q.ids) {
		return gossip.ID{}, false
	}
	id := q.ids[q.head]
	q.head++
	if q.head == len(q.ids) {
		// Drained: give the memory back once a burst has passed.
		if cap(q.ids) > 1024 {
			q.ids = nil
		} else {
			q.ids = q.ids[:0]
		}
		q.head = 0
	} else {
		// More wait: keep the token for the next pop.
		select {
		case q.ready <- struct{}{}:
		default:
		}
	}
	return id, true
}

// pop waits for an id until ctx is done.
func (q *idQueue) pop(ctx context.Context) (gossip.ID, bool) {
	for {
		if id, ok := q.tryPop(); ok {
			return id, true
		}
		select {
		case <-ctx.Done():
			return gossip.ID{}, false
		case <-q.ready:
		}
	}
}

// len is how many ids wait.
func (q *idQueue) len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.ids) - q.head
}
