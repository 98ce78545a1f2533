package link

import (
	"context"
	"crypto/rand"
	"errors"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/qlog"
	"github.com/quic-go/quic-go/qlogwriter"

	"github.com/quicproquo/qpq/mesh/testkit"
)

// fakeInitial is a datagram quic-go takes for a client's first Initial
// (QUIC v1 long header, 8-byte connection ids, no token, 1200 bytes)
// whose payload is random: it starts a handshake that never proceeds.
func fakeInitial() []byte {
	b := make([]byte, 1200)
	rand.Read(b)
	b[0] = 0xc3
	copy(b[1:5], []byte{0, 0, 0, 1})
	b[5] = 8
	b[14] = 8
	b[23] = 0 // token length
	l := len(b) - 26
	b[24], b[25] = 0x40|byte(l>>8), byte(l)
	return b
}

// retryCounter is a client-side qlog trace that counts Retry packets
// received.
type retryCounter struct{ n *atomic.Int64 }

func (r retryCounter) AddProducer() qlogwriter.Recorder { return r }
func (r retryCounter) Close() error                     { return nil }
func (r retryCounter) RecordEvent(e qlogwriter.Event) {
	if p, ok := e.(qlog.PacketReceived); ok && p.Header.PacketType == qlog.PacketTypeRetry {
		r.n.Add(1)
	}
}

// initialsOnly passes only the Initial packets a client writes and never
// delivers what it receives: real ClientHellos from a client that then
// goes silent, as from a spoofed address.
type initialsOnly struct {
	net.PacketConn
	written atomic.Int64
}

func (c *initialsOnly) WriteTo(b []byte, addr net.Addr) (int, error) {
	if len(b) > 0 && b[0]&0xf0 == 0xc0 {
		c.written.Add(1)
		return c.PacketConn.WriteTo(b, addr)
	}
	return len(b), nil
}

func (c *initialsOnly) ReadFrom(b []byte) (int, net.Addr, error) {
	for {
		if _, _, err := c.PacketConn.ReadFrom(b); err != nil {
			return 0, nil, err
		}
	}
}

func heapInUse() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapInuse
}

// A flood of Initials (2,000 that cannot be decrypted and 64 real
// ClientHellos whose senders go silent, all within the handshake timeout)
// keeps the server's handshake state bounded, and a client dialling
// during it gets in within its timeout, through a Retry.
func TestInitialFloodStaysBoundedAndLetsADialThrough(t *testing.T) {
	testkit.LeakCheck(t)
	// initialsOnly is not a *net.UDPConn, which quic-go warns about.
	t.Setenv("QUIC_GO_DISABLE_RECEIVE_BUFFER_WARNING", "true")
	srv := newNode(t)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := srv.tr.Accept(ctx)
			if err != nil {
				return
			}
			c.CloseWithError(CodeClosing, "test")
		}
	}()
	base := heapInUse()
	to := srv.tr.Addr()
	adm := srv.tr.adm

	// Real ClientHellos that never go further.
	udp, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	silent := &initialsOnly{PacketConn: udp}
	str := &quic.Transport{Conn: silent}
	defer udp.Close()
	defer str.Close()
	const stalled = 64
	dctx, dcancel := context.WithCancel(ctx)
	var dials sync.WaitGroup
	for range stalled {
		dials.Add(1)
		go func() {
			defer dials.Done()
			if c, err := str.Dial(dctx, to, clientTLS(nil, ALPNClient, srv.id.Fingerprint()), quicConfig()); err == nil {
				c.CloseWithError(0, "")
			}
		}()
	}

	// Undecryptable Initials from 32 ports, paced so the socket buffer
	// does not drop them before quic-go sees them.
	const flood = 2000
	var socks []*net.UDPConn
	for range 32 {
		s, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		socks = append(socks, s)
	}
	for i := range flood {
		if _, err := socks[i%len(socks)].WriteToUDP(fakeInitial(), to); err != nil {
			t.Fatal(err)
		}
		if i%50 == 49 {
			testkit.WaitFor(t, 2*time.Second, "quic-go to see the Initials sent", func() bool { return adm.seen.Load() >= uint64(i+1-50) })
		}
	}
	testkit.WaitFor(t, 5*time.Second, "the stalled handshakes to be written", func() bool { return silent.written.Load() >= stalled })

	// An honest client dials meanwhile.
	var retries atomic.Int64
	conf := quicConfig()
	conf.Tracer = func(context.Context, bool, quic.ConnectionID) qlogwriter.Trace { return retryCounter{&retries} }
	cudp, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	ctr := &quic.Transport{Conn: cudp}
	defer cudp.Close()
	defer ctr.Close()
	lctx, lcancel := context.WithTimeout(ctx, HandshakeTimeout/2)
	defer lcancel()
	start := time.Now()
	c, err := ctr.Dial(lctx, to, clientTLS(nil, ALPNClient, srv.id.Fingerprint()), conf)
	if err != nil {
		t.Fatalf("honest dial during the flood: %v", err)
	}
	c.CloseWithError(0, "")
	t.Logf("honest dial took %v; Retries seen by it: %d; server: %d Initials decided, %d Retries, %d refused",
		time.Since(start), retries.Load(), adm.seen.Load(), adm.retries.Load(), adm.refused.Load())
	if retries.Load() == 0 {
		t.Errorf("the honest client got no Retry while the server was flooded")
	}
	if st := srv.tr.HandshakeStats(); st.Retries < flood/2 || st.InProgress > RetryAbove+MaxHandshakes {
		t.Errorf("handshake stats %+v: want most of the %d Initials answered with Retry", st, flood)
	}
	unv, ver := adm.inProgress()
	if unv > RetryAbove || ver > MaxHandshakes {
		t.Errorf("handshakes in progress: %d unvalidated, %d validated; bounds %d and %d", unv, ver, RetryAbove, MaxHandshakes)
	}

	// The flood's handshakes are still within their timeout here: what
	// the server holds for them is what we measure.
	dcancel()
	dials.Wait()
	grew := int64(heapInUse()) - int64(base)
	t.Logf("heap in use grew by %.1f MiB during the flood", float64(grew)/(1<<20))
	if grew > 16<<20 {
		t.Errorf("heap grew by %.1f MiB under a flood of %d Initials, want under 16 MiB", float64(grew)/(1<<20), flood+stalled)
	}
}

// An address that has spent its handshakes (as after thousands of full
// handshakes) is refused over real QUIC, at once and without a
// connection kept, while the node's other clients still get in.
func TestSpentSourceRefusedOthersServed(t *testing.T) {
	testkit.LeakCheck(t)
	srv := newNode(t)
	ctx := ctxT(t)
	go func() {
		for {
			c, err := srv.tr.Accept(ctx)
			if err != nil {
				return
			}
			c.CloseWithError(CodeClosing, "test")
		}
	}()
	// Spend 127.0.0.1's bucket the way a handshake flood does.
	adm := srv.tr.adm
	spent := SourceOf(udpAddr("127.0.0.1:1"))
	adm.mu.Lock()
	adm.rate[spent] = &bucket{tokens: -SourceDebt, at: adm.now()}
	adm.mu.Unlock()

	dial := func(from string) error {
		d, err := NewDialer(from, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer d.Close()
		dctx, cancel := context.WithTimeout(ctx, HandshakeTimeout/2)
		defer cancel()
		c, err := d.Dial(dctx, srv.tr.Addr().String(), srv.id.Fingerprint(), ALPNClient)
		if err == nil {
			c.CloseWithError(0, "")
		}
		return err
	}
	start := time.Now()
	err := dial("127.0.0.1:0")
	var te *quic.TransportError
	if !errors.As(err, &te) || te.ErrorCode != quic.ConnectionRefused {
		t.Fatalf("dial from the spent address: %v; want CONNECTION_REFUSED", err)
	}
	if el := time.Since(start); el > HandshakeTimeout/4 {
		t.Errorf("the refusal took %v", el)
	}
	if err := dial("127.0.0.2:0"); err != nil {
		t.Errorf("a client at another address was not served: %v", err)
	}
	// The server's side completes just after the client's.
	testkit.WaitFor(t, 2*time.Second, "no handshake in progress", func() bool { unv, ver := adm.inProgress(); return unv+ver == 0 })
}
