package daemon_test

import (
	"context"
	"io"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/quicproquo/qpq/gossip"
	"github.com/quicproquo/qpq/mesh/identity"
	"github.com/quicproquo/qpq/mesh/link"
	"github.com/quicproquo/qpq/node/client"
	"github.com/quicproquo/qpq/node/config"
	"github.com/quicproquo/qpq/node/daemon"
	"github.com/quicproquo/qpq/node/e2e"

	"github.com/quicproquo/qpq/node/e2e/e2etest"

	"github.com/quicproquo/qpq/node/daemon/daemontest"

	"github.com/quicproquo/qpq/mesh/testkit"
)

// The line benchmarks carry padded 256-byte messages through four nodes on
// loopback (three hops). "qpq" is the whole path: a client enqueues a
// sealed DM at A, it is stored and pushed hop by hop, and a client waiting
// at D fetches it. "bare" is three quic-go stream relays copying the same
// bytes A->B->C->D in this process: the floor the mesh is compared to.

const msgBody = 256

type lineRig struct {
	ds     []*daemon.Daemon
	ids    []*identity.Node
	alice  *e2e.User
	bob    *e2e.User
	to     e2e.Bundle
	atA    *client.Client
	mbAtD  *client.Mailbox
	cancel context.CancelFunc
}

func newLine(b *testing.B) *lineRig {
	r := &lineRig{alice: e2e.NewUser(), bob: e2e.NewUser()}
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	b.Cleanup(cancel)
	dir := b.TempDir()
	cfgs := make([]config.Config, 4)
	for i := range cfgs {
		cfgs[i] = daemontest.Config(dir, string(rune('a'+i)))
		cfgs[i].StoreMaxBytes = 256 << 20
	}
	for _, n := range daemontest.Line(b, cfgs...) {
		r.ds, r.ids = append(r.ds, n.D), append(r.ids, n.ID)
	}
	var err error
	cd, err := client.Dial(ctx, r.ds[3].Addr(), r.ids[3].Fingerprint())
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { cd.Close() })
	signed, _ := r.bob.SignedBundle(1, time.Hour)
	if r.mbAtD, err = cd.Authenticate(ctx, r.bob, signed); err != nil {
		b.Fatal(err)
	}
	if r.atA, err = client.Dial(ctx, r.ds[0].Addr(), r.ids[0].Fingerprint()); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { r.atA.Close() })
	testkit.WaitFor(b, 20*time.Second, "bob's bundle to reach A", func() bool {
		r.to, err = r.atA.LookupBundle(ctx, r.bob.Fingerprint())
		return err == nil
	})
	return r
}

func (r *lineRig) seal(b *testing.B) gossip.Envelope {
	return e2etest.SealDM(b, r.alice, r.to, make([]byte, msgBody))
}

// drain fetches at D until n messages arrived, acknowledging them so the
// mailbox stays small.
func (r *lineRig) drain(b *testing.B, n int) {
	ctx := context.Background()
	for got := 0; got < n; {
		envs, err := r.mbAtD.Fetch(ctx, 256, 10*time.Second)
		if err != nil {
			b.Fatal(err)
		}
		if len(envs) == 0 {
			b.Fatalf("only %d of %d messages reached D", got, n)
		}
		var secrets [][]byte
		for _, e := range envs {
			m, err := e2e.OpenDM(r.bob, e.Payload)
			if err != nil {
				b.Fatal(err)
			}
			secrets = append(secrets, m.ReceiptSecret[:])
		}
		if _, err := r.mbAtD.Ack(ctx, secrets); err != nil {
			b.Fatal(err)
		}
		got += len(envs)
	}
}

// bareChain is three stream relays: a writer at A, copies at B and C, a
// reader at D.
func bareChain(b *testing.B) (w io.Writer, rd io.Reader) {
	ctx := b.Context()
	id, _ := identity.NewNode()
	var prev io.Writer
	var first io.Writer
	var trs []*link.Transport
	listen := func() *link.Transport {
		t, err := link.Listen("127.0.0.1:0", id)
		if err != nil {
			b.Fatal(err)
		}
		trs = append(trs, t)
		return t
	}
	b.Cleanup(func() {
		for _, t := range trs {
			t.Close()
		}
	})
	open := func(from, to *link.Transport) *quic.Stream {
		c, err := from.Dial(ctx, to.Addr().String(), id.Fingerprint(), link.ALPNClient)
		if err != nil {
			b.Fatal(err)
		}
		s, err := c.OpenStreamSync(ctx)
		if err != nil {
			b.Fatal(err)
		}
		s.Write([]byte{0}) // makes the stream visible to the acceptor
		return s
	}
	accept := func(t *link.Transport) *quic.Stream {
		c, err := t.Accept(ctx)
		if err != nil {
			b.Fatal(err)
		}
		s, err := c.AcceptStream(ctx)
		if err != nil {
			b.Fatal(err)
		}
		one := make([]byte, 1)
		io.ReadFull(s, one)
		return s
	}
	nodes := []*link.Transport{listen(), listen(), listen(), listen()}
	for i := 0; i < 3; i++ {
		acc := make(chan *quic.Stream, 1)
		go func() { acc <- accept(nodes[i+1]) }()
		out := open(nodes[i], nodes[i+1])
		in := <-acc
		if i == 0 {
			first = out
		} else {
			go io.Copy(out, prev.(*quic.Stream))
		}
		prev = in
	}
	return first, prev.(*quic.Stream)
}

func BenchmarkLineLatency(b *testing.B) {
	b.Run("bare", func(b *testing.B) {
		w, rd := bareChain(b)
		buf := make([]byte, e2e.DMPayloadSize(msgBody))
		for b.Loop() {
			w.Write(buf)
			if _, err := io.ReadFull(rd, buf); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N)/3, "us/hop")
	})
	b.Run("qpq", func(b *testing.B) {
		r := newLine(b)
		for b.Loop() {
			b.StopTimer()
			e := r.seal(b)
			b.StartTimer()
			if _, err := r.atA.Enqueue(context.Background(), e); err != nil {
				b.Fatal(err)
			}
			r.drain(b, 1)
		}
		b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N)/3, "us/hop")
	})
}

func BenchmarkLineThroughput(b *testing.B) {
	b.Run("bare", func(b *testing.B) {
		w, rd := bareChain(b)
		size := e2e.DMPayloadSize(msgBody)
		done := make(chan error, 1)
		go func() {
			buf := make([]byte, size)
			for range b.N {
				if _, err := io.ReadFull(rd, buf); err != nil {
					done <- err
					return
				}
			}
			done <- nil
		}()
		buf := make([]byte, size)
		b.ResetTimer()
		for range b.N {
			w.Write(buf)
		}
		if err := <-done; err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msg/s")
	})
	b.Run("qpq", func(b *testing.B) {
		r := newLine(b)
		envs := make([]gossip.Envelope, b.N)
		for i := range envs {
			envs[i] = r.seal(b)
		}
		b.ResetTimer()
		for _, e := range envs {
			if _, err := r.atA.Enqueue(context.Background(), e); err != nil {
				b.Fatal(err)
			}
		}
		r.drain(b, b.N)
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msg/s")
	})
}
