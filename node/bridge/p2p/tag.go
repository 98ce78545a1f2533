//go:build !bridge

package p2p

// The daemon's bridge links are built only with the bridge tag, which
// keeps them out of the router binary. Without it this package cannot
// build, and says so here.
const needsBridgeTag int = "qpq-bridge is built with -tags bridge: run make bridge, or go build/test/vet -tags bridge"
