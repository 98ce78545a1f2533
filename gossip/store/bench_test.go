package store

import (
	"path/filepath"
	"testing"

	"github.com/quicproquo/qpq/gossip"

	"github.com/quicproquo/qpq/gossip/gossiptest"
)

// BenchmarkPut measures durable puts of a small dm (one fsync'd commit
// each); the file is in $TMPDIR, so run it with TMPDIR on tmpfs to see
// a router's /tmp.
func BenchmarkPut(b *testing.B) {
	s, err := Open(filepath.Join(b.TempDir(), "store.db"), Options{MaxBytes: 1 << 30, MaxPerSource: 1 << 30})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	es := make([]gossip.Envelope, b.N)
	for i := range es {
		es[i] = gossiptest.DM(nil, nil, 3600, 4)
	}
	b.SetBytes(int64(len(es[0].Payload)))
	b.ResetTimer()
	for i := range b.N {
		if _, err := s.Put(es[i], "bench"); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkGet measures reads of random envelopes from a store of 2000.
func BenchmarkGet(b *testing.B) {
	s, err := Open(filepath.Join(b.TempDir(), "store.db"), Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	ids := make([]gossip.ID, 2000)
	for i := range ids {
		e := gossiptest.DM(nil, nil, 3600, 4)
		if _, err := s.Put(e, "bench"); err != nil {
			b.Fatal(err)
		}
		ids[i] = e.ID
	}
	b.SetBytes(4 * gossip.PadBlock)
	b.ResetTimer()
	for i := range b.N {
		if _, ok, err := s.Get(ids[i%len(ids)]); !ok || err != nil {
			b.Fatal(ok, err)
		}
	}
}
