package outbox

import (
	"time"

	"github.com/quicproquo/qpq/node/e2e"
)

// sealDM seals one DM body. seq and ttl go inside the sealed payload once
// the inner layout carries them (h/seq: e2e.SealDMWith with Meta).
func sealDM(u *e2e.User, b e2e.Bundle, body []byte, sentAt time.Time, seq uint64, ttl time.Duration) (e2e.Sealed, error) {
	_, _ = seq, ttl
	return e2e.SealDM(u, b, body, sentAt)
}

// sealChannel seals one channel message body (seq and ttl as for sealDM).
func sealChannel(u *e2e.User, k e2e.ChannelKey, body []byte, sentAt time.Time, seq uint64, ttl time.Duration) ([]byte, error) {
	_, _ = seq, ttl
	return e2e.SealChannel(u, k, body, sentAt)
}
