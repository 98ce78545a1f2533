package daemon

import "github.com/quicproquo/qpq/gossip/store"

// StoreStats is the node's store snapshot, Commits included, which
// Status leaves out. It is cheap (counters only, no walk of the store),
// so benchmarks poll it: commits per relayed DM, and how many envelopes
// a neighbour has caught up.
func (d *Daemon) StoreStats() store.Stats { return d.st.Stats() }
