//go:build !bridge

package daemon

import (
	"github.com/quicproquo/qpq/mesh/identity"
	"github.com/quicproquo/qpq/node/control"
)

// The router build leaves bridge links out (bridge.go, built with the
// bridge tag by qpq-bridge's module): routers never join islands, so
// their binary carries none of it. What a router needs of bridging, to
// recognise descriptors from other islands and never dial them, is in
// exchange.go and is built everywhere.

// bridgeLink is empty here: no bridge link is ever registered.
type bridgeLink struct{}

// bridgePeersLocked has no bridge links to report.
func (d *Daemon) bridgePeersLocked() []control.Peer { return nil }

// closeBridgeLocked has no bridge link to end.
func (d *Daemon) closeBridgeLocked(identity.Fingerprint) {}
