package daemon

import (
	"context"
	"crypto/rand"
	"fmt"
	"net"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/quicproquo/qpq/gossip"
	"github.com/quicproquo/qpq/gossip/relay"
	"github.com/quicproquo/qpq/node/client"

	"github.com/quicproquo/qpq/mesh/testkit"
)

// Quotas and slots count an IPv6 client per /64 (one subscriber's
// prefix), an IPv4 client per address.
func TestClientKeyCountsIPv6Per64(t *testing.T) {
	key := func(s string) string { return clientKey(net.UDPAddrFromAddrPort(netipAddrPort(t, s))) }
	if a, b := key("[2001:db8:1:2:aaaa::1]:4000"), key("[2001:db8:1:2:bbbb:cccc:dddd:2]:5000"); a != b {
		t.Errorf("two addresses in one /64 have keys %q and %q, want one", a, b)
	}
	if a, b := key("[2001:db8:1:2::1]:4000"), key("[2001:db8:1:3::1]:4000"); a == b {
		t.Errorf("two /64s share key %q", a)
	}
	if got := key("[2001:db8:1:2::1]:4000"); got != "2001:db8:1:2::/64" {
		t.Errorf("IPv6 key = %q, want the /64", got)
	}
	if a, b := key("192.0.2.1:1"), key("192.0.2.2:1"); a == b {
		t.Errorf("two IPv4 addresses share key %q", a)
	}
	if got := key("[::ffff:192.0.2.1]:1"); got != "192.0.2.1" {
		t.Errorf("IPv4-mapped key = %q, want 192.0.2.1", got)
	}
}

// Idle connections from one address cannot take every client slot, and
// when idle connections from many addresses fill them, a new client still
// gets in: the longest-idle connection makes room.
func TestIdleClientsCannotTakeAllSlots(t *testing.T) {
	testkit.LeakCheck(t)
	d := newDaemon(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	dial := func(local string) (*client.Client, error) {
		c, err := client.DialFrom(ctx, local, d.Addr(), d.Fingerprint())
		if err == nil {
			t.Cleanup(func() { c.Close() })
		}
		return c, err
	}
	for i := range maxClientsPerAddr {
		if _, err := dial("127.0.0.1:0"); err != nil {
			t.Fatalf("client %d from 127.0.0.1: %v", i, err)
		}
	}
	if _, err := dial("127.0.0.1:0"); err == nil {
		t.Fatalf("client %d from one address got in; want at most %d per address", maxClientsPerAddr+1, maxClientsPerAddr)
	}
	// Fill every slot with idle clients from more addresses.
	for a := 2; d.clientCount() < maxClients; a++ {
		for range maxClientsPerAddr {
			if d.clientCount() == maxClients {
				break
			}
			if _, err := dial(fmt.Sprintf("127.0.0.%d:0", a)); err != nil {
				t.Fatalf("client from 127.0.0.%d: %v", a, err)
			}
		}
	}
	c, err := dial("127.0.0.200:0")
	if err != nil {
		t.Fatalf("a new client with every slot idle: %v", err)
	}
	if _, err := c.ChannelFetch(ctx, [][32]byte{{1}}, nil, 1, 0); err != nil {
		t.Fatalf("the new client's call: %v", err)
	}
}

// Long polls are capped per connection and per address, and one wait on
// many channels holds no goroutine per channel.
func TestWaitingFetchesAreCapped(t *testing.T) {
	testkit.LeakCheck(t)
	d := newDaemon(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var conns []*client.Client
	for range 3 {
		c, err := client.DialFrom(ctx, "127.0.0.1:0", d.Addr(), d.Fingerprint())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		conns = append(conns, c)
	}
	ids := make([][32]byte, maxChannels)
	for i := range ids {
		rand.Read(ids[i][:])
	}
	before := runtime.NumGoroutine()
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel() // ends the waits before wg.Wait
	for _, c := range conns[:2] {
		for range maxWaitsPerConn {
			wg.Add(1)
			go func() {
				defer wg.Done()
				c.ChannelFetch(ctx, ids, nil, 1, time.Minute)
			}()
		}
	}
	testkit.WaitFor(t, 10*time.Second, "every allowed wait to be waiting", func() bool { return d.waiting() == 2*maxWaitsPerConn })
	// Each wait covers 64 channels: a goroutine per channel would add
	// 512; the fetch calls themselves need a few each, client included.
	if grew := runtime.NumGoroutine() - before; grew > 16*2*maxWaitsPerConn {
		t.Errorf("goroutines grew by %d for %d waits on %d channels", grew, 2*maxWaitsPerConn, len(ids))
	}
	_, err := conns[0].ChannelFetch(ctx, ids, nil, 1, time.Minute)
	if err == nil || !strings.Contains(err.Error(), "too many waiting") {
		t.Errorf("a wait past the per-connection cap: err = %v, want too many waiting", err)
	}
	_, err = conns[2].ChannelFetch(ctx, ids, nil, 1, time.Minute)
	if err == nil || !strings.Contains(err.Error(), "too many waiting") {
		t.Errorf("a wait past the per-address cap: err = %v, want too many waiting", err)
	}
	// A fetch that does not wait is still served.
	if _, err := conns[2].ChannelFetch(ctx, ids, nil, 1, 0); err != nil {
		t.Errorf("a fetch without wait: %v", err)
	}
}

// clientCount is how many client connections are admitted.
func (d *Daemon) clientCount() int {
	d.clients.mu.Lock()
	defer d.clients.mu.Unlock()
	return len(d.clients.conns)
}

// waiting is how many long polls are waiting over every connection.
func (d *Daemon) waiting() int {
	d.clients.mu.Lock()
	defer d.clients.mu.Unlock()
	n := 0
	for c := range d.clients.conns {
		n += int(c.waits.Load())
	}
	return n
}

// fillChannel stores broadcasts of about size bytes on channel id.
func fillChannel(t *testing.T, d *Daemon, id [32]byte, size int) {
	t.Helper()
	for n := 0; n < size; {
		payload := make([]byte, 16*gossip.PadBlock)
		rand.Read(payload)
		e := gossip.Envelope{Kind: gossipBroadcast, Destination: id[:], Payload: payload, TTLSeconds: 3600, HopLimit: 3}
		e.ID = gossip.ComputeID(e.Kind, e.Destination, nil, e.Payload)
		if _, err := d.eng.Accept(e, relay.Source{Client: "test"}); err != nil {
			t.Fatal(err)
		}
		n += len(payload)
	}
}

// A client connection with no call in progress is closed after the idle
// timeout; a long poll waiting longer than that counts as activity.
func TestIdleClientIsClosed(t *testing.T) {
	testkit.LeakCheck(t)
	// Restored in a cleanup registered before the node's, so it runs
	// after the node has stopped reading it (a defer would race with the
	// node's client goroutines, which stop in the node's cleanup).
	old := clientIdleTimeout
	t.Cleanup(func() { clientIdleTimeout = old })
	clientIdleTimeout = 300 * time.Millisecond
	d := newDaemon(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	idle, err := client.DialFrom(ctx, "127.0.0.1:0", d.Addr(), d.Fingerprint())
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	busy, err := client.DialFrom(ctx, "127.0.0.2:0", d.Addr(), d.Fingerprint())
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	// Waits three idle timeouts on a channel nobody sends to.
	if _, err := busy.ChannelFetch(ctx, [][32]byte{{7}}, nil, 1, time.Second); err != nil {
		t.Fatalf("a long poll longer than the idle timeout: %v", err)
	}
	testkit.WaitFor(t, 5*time.Second, "the idle client to be closed", func() bool { return d.clientCount() == 1 })
	if _, err := idle.ChannelFetch(ctx, [][32]byte{{7}}, nil, 1, 0); err == nil {
		t.Error("the idle client's connection still answers")
	}
	if _, err := busy.ChannelFetch(ctx, [][32]byte{{7}}, nil, 1, 0); err != nil {
		t.Errorf("the busy client after its long poll: %v", err)
	}
}
