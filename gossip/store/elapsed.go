package store

import "time"

// Elapsed is the store's elapsed counter now: monotonic time that goes on
// across restarts from the last write (routers have no trustworthy wall
// clock), the basis on which every TTL here ages.
func (s *Store) Elapsed() time.Duration {
	el, _ := s.now()
	return el
}
