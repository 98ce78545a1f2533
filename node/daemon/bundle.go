package daemon

import (
	"github.com/quicproquo/qpq/mesh/identity"
	"github.com/quicproquo/qpq/node/e2e"
)

// verifyBundle adapts e2e.VerifyBundle for the relay engine.
func verifyBundle(signed []byte) (identity.Fingerprint, uint64, error) {
	b, err := e2e.VerifyBundle(signed)
	if err != nil {
		return identity.Fingerprint{}, 0, err
	}
	return b.Fingerprint, b.Sequence, nil
}
