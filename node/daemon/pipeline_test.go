package daemon

import (
	"context"
	"errors"
	"runtime"
	"testing"
	"time"

	"capnproto.org/go/capnp/v3"
	"capnproto.org/go/capnp/v3/rpc"
	"github.com/quic-go/quic-go"

	"github.com/quicproquo/qpq/mesh/link"
	"github.com/quicproquo/qpq/schemas"

	"github.com/quicproquo/qpq/mesh/testkit"
)

// deafCodec writes calls but never reads what comes back: a slow reader.
type deafCodec struct {
	enc  *capnp.Encoder
	s    *quic.Stream
	done chan struct{}
}

func (c *deafCodec) Encode(m *capnp.Message) error { return c.enc.Encode(m) }
func (c *deafCodec) Decode() (*capnp.Message, error) {
	<-c.done
	return nil, errors.New("closed")
}
func (c *deafCodec) Close() error {
	select {
	case <-c.done:
	default:
		close(c.done)
	}
	c.s.CancelRead(0)
	return c.s.Close()
}

// A client that pipelines many channelFetch calls and never reads the
// answers does not grow the node's heap with queued answers: the
// connection is closed once too many calls are unanswered.
func TestPipelinedCallsWithoutReadingAreBounded(t *testing.T) {
	testkit.LeakCheck(t)
	d := newDaemon(t, nil)
	ch := [32]byte{9}
	fillChannel(t, d, ch, 120<<10) // each answer carries ~120 KiB
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	tr, err := link.NewDialer("127.0.0.1:0", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	conn, err := tr.Dial(ctx, d.Addr(), d.Fingerprint(), link.ALPNClient)
	if err != nil {
		t.Fatal(err)
	}
	s, err := conn.OpenStreamSync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	rc := rpc.NewConn(rpc.NewTransport(&deafCodec{enc: capnp.NewEncoder(s), s: s, done: make(chan struct{})}), nil)
	node := schemas.Node(rc.Bootstrap(ctx))
	defer func() {
		// The connection is gone: closing it first keeps the client's
		// shutdown from waiting on a stream nobody reads.
		conn.CloseWithError(0, "")
		rc.Close()
	}()

	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	const calls = 600 // ~70 MiB of answers if all were queued
	for i := 0; i < calls && conn.Context().Err() == nil; i++ {
		node.ChannelFetch(ctx, func(p schemas.Node_channelFetch_Params) error {
			l, err := p.NewChannels(1)
			if err != nil {
				return err
			}
			return l.Set(0, ch[:])
		})
	}
	select {
	case <-conn.Context().Done():
	case <-time.After(10 * time.Second):
		t.Fatal("the node kept a connection that pipelined calls without reading the answers")
	}
	var after runtime.MemStats
	runtime.ReadMemStats(&after)
	if grew := int64(after.HeapAlloc) - int64(before.HeapAlloc); grew > 32<<20 {
		t.Errorf("heap grew by %d MiB for one connection that does not read", grew>>20)
	}
	testkit.WaitFor(t, 5*time.Second, "the deaf connection to be released", func() bool { return d.clientCount() == 0 })
	if n := d.clients.calls.Load(); n != 0 {
		t.Errorf("%d calls still counted in flight after the connection closed", n)
	}
}
