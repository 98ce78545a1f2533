package wire

import (
	"github.com/quicproquo/qpq/gossip/relay"
	"github.com/quicproquo/qpq/schemas"
)

// setSummaryRange writes a partial summary's bounds and digest; a whole-store
// summary (both empty) writes neither, so it is exactly what a
// version-1 node sends.
func setSummaryRange(sum schemas.Summary, s relay.Summary) error {
	if len(s.Start) > 0 {
		if err := sum.SetStart(s.Start); err != nil {
			return err
		}
	}
	if len(s.End) > 0 {
		if err := sum.SetEnd(s.End); err != nil {
			return err
		}
	}
	if len(s.Digest) > 0 {
		if err := sum.SetDigest(s.Digest); err != nil {
			return err
		}
	}
	return nil
}

// readSummaryRange reads a summary's bounds and digest into s (empty when absent,
// as from a version-1 node); the engine checks them (relay.ErrBadSummary).
func readSummaryRange(sum schemas.Summary, s *relay.Summary) error {
	var err error
	if sum.HasStart() {
		if s.Start, err = sum.Start(); err != nil {
			return err
		}
	}
	if sum.HasEnd() {
		if s.End, err = sum.End(); err != nil {
			return err
		}
	}
	if sum.HasDigest() {
		if s.Digest, err = sum.Digest(); err != nil {
			return err
		}
	}
	return nil
}
