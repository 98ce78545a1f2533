package daemon

import (
	"context"

	"github.com/quicproquo/qpq/schemas"
)

// Receipts streams the receipt secrets this node has seen (first cut:
// none yet; the store-backed stream follows).
func (s *clientSession) Receipts(ctx context.Context, call schemas.Node_receipts) error {
	defer s.cc.begin()()
	res, err := call.AllocResults()
	if err != nil {
		return err
	}
	if _, err := res.NewSecrets(0); err != nil {
		return err
	}
	res.SetNext(call.Args().After())
	return nil
}
