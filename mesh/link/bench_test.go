package link

import (
	"context"
	"io"
	"sync/atomic"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
)

// benchServer accepts on b: node links (ALPNPeer) get a MeshPeer, bare
// connections (ALPNClient) get a plain echo on their first stream, the
// baseline quic-go does without us.
func benchServer(tb testing.TB, srv *node) {
	ctx, cancel := context.WithCancel(context.Background())
	tb.Cleanup(cancel)
	go func() {
		for {
			c, err := srv.tr.Accept(ctx)
			if err != nil {
				return
			}
			go func(c *quic.Conn) {
				if c.ConnectionState().TLS.NegotiatedProtocol == ALPNPeer {
					if l, err := Establish(ctx, c, false, srv.bootstrap(), LocalHello("bench", "qpq"), nil); err == nil {
						<-l.Done()
						l.Close(CodeClosing, "")
					}
					return
				}
				s, err := c.AcceptStream(ctx)
				if err != nil {
					return
				}
				io.Copy(s, s)
				s.Close()
			}(c)
		}
	}()
}

func benchCtx(b *testing.B) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	b.Cleanup(cancel)
	return ctx
}

// BenchmarkSetup: dial, handshake and the first round trip; "bare" echoes
// one byte on a quic-go stream, "link" runs the RPC hello.
func BenchmarkSetup(b *testing.B) {
	srv, cli := newNode(b), newNode(b)
	// One source dialling thousands of times in a row is what the
	// handshake bounds exist to slow down (SourceDebt: past ~200 it gets
	// SourceRate a second, then CONNECTION_REFUSED). This benchmark
	// measures a handshake, not the bound: its clock gains a second per
	// reading, so the source's bucket is always full.
	var tick atomic.Int64
	start := time.Now()
	srv.tr.adm.now = func() time.Time { return start.Add(time.Duration(tick.Add(1)) * time.Second) }
	benchServer(b, srv)
	ctx := benchCtx(b)
	b.Run("bare", func(b *testing.B) {
		for b.Loop() {
			c, err := cli.tr.Dial(ctx, srv.tr.Addr().String(), srv.id.Fingerprint(), ALPNClient)
			if err != nil {
				b.Fatal(err)
			}
			s, err := c.OpenStreamSync(ctx)
			if err != nil {
				b.Fatal(err)
			}
			buf := []byte{1}
			s.Write(buf)
			if _, err := io.ReadFull(s, buf); err != nil {
				b.Fatal(err)
			}
			c.CloseWithError(0, "")
		}
	})
	b.Run("link", func(b *testing.B) {
		for b.Loop() {
			c, err := cli.tr.Dial(ctx, srv.tr.Addr().String(), srv.id.Fingerprint(), ALPNPeer)
			if err != nil {
				b.Fatal(err)
			}
			l, err := Establish(ctx, c, true, cli.bootstrap(), LocalHello("bench", "qpq"), nil)
			if err != nil {
				b.Fatal(err)
			}
			l.Close(CodeClosing, "")
		}
	})
}

// BenchmarkRoundTrip: one request and answer on an established
// connection; "bare" echoes 256 bytes on a stream, "rpc" calls health.
func BenchmarkRoundTrip(b *testing.B) {
	srv, cli := newNode(b), newNode(b)
	benchServer(b, srv)
	ctx := benchCtx(b)
	b.Run("bare", func(b *testing.B) {
		c, err := cli.tr.Dial(ctx, srv.tr.Addr().String(), srv.id.Fingerprint(), ALPNClient)
		if err != nil {
			b.Fatal(err)
		}
		defer c.CloseWithError(0, "")
		s, err := c.OpenStreamSync(ctx)
		if err != nil {
			b.Fatal(err)
		}
		buf := make([]byte, 256)
		for b.Loop() {
			s.Write(buf)
			if _, err := io.ReadFull(s, buf); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("rpc", func(b *testing.B) {
		c, err := cli.tr.Dial(ctx, srv.tr.Addr().String(), srv.id.Fingerprint(), ALPNPeer)
		if err != nil {
			b.Fatal(err)
		}
		l, err := Establish(ctx, c, true, cli.bootstrap(), LocalHello("bench", "qpq"), nil)
		if err != nil {
			b.Fatal(err)
		}
		defer l.Close(CodeClosing, "")
		for b.Loop() {
			if err := l.Probe(ctx); err != nil {
				b.Fatal(err)
			}
		}
	})
}
