package outbox

import (
	"time"

	"github.com/quicproquo/qpq/node/e2e"
)

// sealDM seals one DM body with its per-conversation sequence and TTL
// inside (inner layout version 2), so the reader can tell a gap.
func sealDM(u *e2e.User, b e2e.Bundle, body []byte, sentAt time.Time, seq uint64, ttl time.Duration) (e2e.Sealed, error) {
	return e2e.SealDMWith(u, b, body, sentAt, e2e.Meta{Seq: seq, TTL: ttl})
}

// sealChannel seals one channel message body, as sealDM.
func sealChannel(u *e2e.User, k e2e.ChannelKey, body []byte, sentAt time.Time, seq uint64, ttl time.Duration) ([]byte, error) {
	return e2e.SealChannelWith(u, k, body, sentAt, e2e.Meta{Seq: seq, TTL: ttl})
}
