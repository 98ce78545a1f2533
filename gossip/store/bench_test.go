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

// BenchmarkApply compares durable puts one by one (single: one commit
// and fsync each) with batches of 32 puts in one Apply (batch32: one
// commit per 32), reporting the cost per envelope. The file is in
// $TMPDIR: run it with TMPDIR on tmpfs and on disk.
func BenchmarkApply(b *testing.B) {
	newStore := func(b *testing.B) (*Store, []gossip.Envelope) {
		s, err := Open(filepath.Join(b.TempDir(), "store.db"), Options{MaxBytes: 1 << 30, MaxPerSource: 1 << 30, MaxPerMailbox: 1 << 30})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { s.Close() })
		es := make([]gossip.Envelope, b.N)
		for i := range es {
			es[i] = gossiptest.DM(nil, nil, 3600, 4)
		}
		b.SetBytes(int64(len(es[0].Payload)))
		b.ResetTimer()
		return s, es
	}
	perEnvelope := func(b *testing.B) {
		b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N), "µs/envelope")
	}
	b.Run("single", func(b *testing.B) {
		s, es := newStore(b)
		for i := range es {
			if added, err := s.Put(es[i], "bench"); !added || err != nil {
				b.Fatal(added, err)
			}
		}
		b.StopTimer()
		perEnvelope(b)
	})
	b.Run("batch32", func(b *testing.B) {
		s, es := newStore(b)
		ops := make([]Op, 0, 32)
		for i := 0; i < len(es); i += 32 {
			ops = ops[:0]
			for j := i; j < min(i+32, len(es)); j++ {
				ops = append(ops, Op{Put: &es[j], Source: "bench"})
			}
			res, err := s.Apply(ops)
			if err != nil {
				b.Fatal(err)
			}
			for _, r := range res {
				if !r.Added || r.Err != nil {
					b.Fatal(r)
				}
			}
		}
		b.StopTimer()
		perEnvelope(b)
	})
}
