//go:build bridge

package daemon

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"capnproto.org/go/capnp/v3"

	"github.com/quicproquo/qpq/gossip"
	"github.com/quicproquo/qpq/gossip/relay"
	"github.com/quicproquo/qpq/gossip/wire"
	"github.com/quicproquo/qpq/mesh/descriptor"
	"github.com/quicproquo/qpq/mesh/identity"
	"github.com/quicproquo/qpq/mesh/link"
	"github.com/quicproquo/qpq/node/control"
	"github.com/quicproquo/qpq/schemas"
)

// A bridge link joins this node to a bridge of another mesh island. The
// gateway build (node/bridge, qpq-bridge) makes it over libp2p and hands
// it here as a byte stream whose peer it has authenticated; the daemon
// runs the same RPC, push, summary and receipt protocol on it as on any
// link, with what crosses filtered:
//   - broadcasts cross only for the channels the operator bridged;
//   - descriptors coming in are marked with the island they come from
//     (descriptor.MarkIsland), so that no node dials them; descriptors
//     already marked never go out again (each island's own cross once);
//   - envelopes coming in are rate limited per bridge link.
//
// The router build has this code but nothing that calls it.

// viaBridge is how status names a bridge link.
const viaBridge = "bridge"

// BridgeLink is a connection to another island's bridge.
type BridgeLink struct {
	// Peer is the qpq node fingerprint the peer proved (its libp2p key is
	// its node key).
	Peer identity.Fingerprint
	// Island is the island the peer bridge says it is of.
	Island string
	// Conn carries the link's RPC: a reliable, ordered byte stream.
	// RunBridge closes it.
	Conn io.ReadWriteCloser
	// Outbound is true on the side that dialled.
	Outbound bool
	// Addr is the peer's address, for status and logs.
	Addr string
}

// ErrBridgeDuplicate ends a bridge link that lost to another connection
// to the same bridge, or to a mesh link to the same node.
var ErrBridgeDuplicate = errors.New("bridge link not kept: another bridge link or a mesh link to the same node is up")

// bridgeLink is a registered bridge link.
type bridgeLink struct {
	BridgeLink
	since   time.Time
	cancel  context.CancelFunc
	counted *countingConn
	rtt     atomic.Int64 // last probe's round trip, ns
	in      *bridgeIn
	out     *bridgePeer
}

// RunBridge runs bl until it ends, ctx is cancelled or the node stops,
// and says why it ended. It closes bl.Conn.
func (d *Daemon) RunBridge(ctx context.Context, bl BridgeLink) error {
	defer bl.Conn.Close()
	own := d.cfg.Bridge.Island
	switch {
	case own == "":
		return errors.New("bridge link: this node has no bridge island configured")
	case !descriptor.IslandRE.MatchString(bl.Island):
		return fmt.Errorf("bridge link to %s: island %q is not a valid island name", bl.Peer, bl.Island)
	case bl.Island == own:
		return fmt.Errorf("bridge link to %s: it says it is of island %q, as this bridge is: bridges of one island link over the mesh, not over libp2p", bl.Peer, own)
	case bl.Peer.Equal(d.id.Fingerprint()):
		return errors.New("bridge link to ourselves")
	}
	// Counted in the daemon's wait group, so Close waits for the link to
	// leave the relay engine before it closes the store.
	d.mu.Lock()
	if d.ctx.Err() != nil {
		d.mu.Unlock()
		return errors.New("node shutting down")
	}
	d.wg.Add(1)
	d.mu.Unlock()
	defer d.wg.Done()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(d.ctx, cancel)
	defer stop()

	b := &bridgeLink{BridgeLink: bl, since: time.Now(), cancel: cancel, counted: &countingConn{rwc: bl.Conn}}
	b.in = &bridgeIn{d: d, island: bl.Island, bucket: newBridgeBucket(d.cfg.Bridge.Rate, time.Now)}
	rc := link.NewRPCConn(b.counted, d.bridgeBootstrap(bl.Peer, b.in, cancel), d.log)
	defer rc.Close()
	remote := schemas.MeshPeer(rc.Bootstrap(ctx))
	defer remote.Release()

	hctx, hcancel := context.WithTimeout(ctx, probeTimeout)
	theirs, err := link.CallHello(hctx, remote, d.hello)
	hcancel()
	if err != nil {
		return fmt.Errorf("hello to bridge %s at %s: %w", bl.Peer, bl.Addr, err)
	}
	version, err := link.Negotiate(d.hello, theirs)
	if err != nil {
		return fmt.Errorf("hello to bridge %s at %s: %w", bl.Peer, bl.Addr, err)
	}
	if theirs.Domain != d.cfg.Domain {
		return fmt.Errorf("bridge %s at %s is of mesh domain %q, ours is %q", bl.Peer, bl.Addr, theirs.Domain, d.cfg.Domain)
	}
	b.out = newBridgePeer(wire.NewPeer(remote, version), d.cfg.Bridge.Channels)
	if !d.addBridge(b) {
		return ErrBridgeDuplicate
	}
	// A mesh link to the same node that comes up later ends this one
	// (closeBridgeLocked): a node has one relay peer.
	defer d.removeBridge(b)
	d.log.Info("bridge link up", "peer", bl.Peer, "island", bl.Island, "addr", bl.Addr, "outbound", bl.Outbound)
	stopRelay := d.eng.AddPeer(bl.Peer, b.out)
	defer stopRelay()

	t := time.NewTicker(probeInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			if d.ctx.Err() != nil {
				return errors.New("node shutting down")
			}
			return context.Cause(ctx)
		case <-rc.Done():
			return fmt.Errorf("bridge %s: connection ended", bl.Peer)
		case <-t.C:
			pctx, pcancel := context.WithTimeout(ctx, probeTimeout)
			start := time.Now()
			fut, release := remote.Health(pctx, nil)
			_, err := fut.Struct()
			release()
			pcancel()
			if err != nil && ctx.Err() == nil {
				return fmt.Errorf("bridge %s: probe failed: %w", bl.Peer, err)
			}
			b.rtt.Store(int64(time.Since(start)))
		}
	}
}

// bridgeBootstrap is the MeshPeer offered to a bridge: pushes go through
// in (filtered, marked, rate limited); no mailboxes (placement stays on
// the island) and no onion calls (an onion packet crosses as an envelope).
func (d *Daemon) bridgeBootstrap(fp identity.Fingerprint, in *bridgeIn, drop context.CancelFunc) capnp.Client {
	return wire.NewServer(fp, wire.ServerOptions{
		Local:   d.hello,
		Stats:   d.stats,
		Handler: in,
		Log:     d.log,
		// A call that panicked ends the link (cancel does not wait).
		Drop: func(string) { drop() },
	}).Client()
}

// addBridge registers b. Of two connections between the same two bridges
// (both dialled at once) both keep the one dialled by the lower
// fingerprint; a newer one from the same dialler replaces the older.
func (d *Daemon) addBridge(b *bridgeLink) bool {
	dialler := func(x *bridgeLink) identity.Fingerprint {
		if x.Outbound {
			return d.id.Fingerprint()
		}
		return x.Peer
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.bridges == nil {
		d.bridges = map[identity.Fingerprint]*bridgeLink{}
	}
	if d.links[b.Peer] != nil {
		// One relay peer per node: a neighbour over the mesh is that.
		return false
	}
	old := d.bridges[b.Peer]
	if old != nil && dialler(old) != dialler(b) && dialler(old).Less(dialler(b)) {
		return false
	}
	if old != nil {
		old.cancel()
	}
	d.bridges[b.Peer] = b
	return true
}

// closeBridgeLocked ends the bridge link to fp, if any: a mesh link to
// the same node replaces it (one relay peer per node). The caller holds
// d.mu.
func (d *Daemon) closeBridgeLocked(fp identity.Fingerprint) {
	if b := d.bridges[fp]; b != nil {
		b.cancel()
		delete(d.bridges, fp)
	}
}

func (d *Daemon) removeBridge(b *bridgeLink) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.bridges[b.Peer] == b {
		delete(d.bridges, b.Peer)
	}
}

// Bridged reports whether a bridge link to fp is up.
func (d *Daemon) Bridged(fp identity.Fingerprint) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.bridges[fp] != nil
}

// bridgePeers is the status of the bridge links; the caller holds d.mu.
func (d *Daemon) bridgePeersLocked() []control.Peer {
	var out []control.Peer
	for _, b := range d.bridges {
		dir := "inbound"
		if b.Outbound {
			dir = "outbound"
		}
		out = append(out, control.Peer{
			Via:           viaBridge,
			Island:        b.Island,
			Fingerprint:   b.Peer.String(),
			Addr:          b.Addr,
			Direction:     dir,
			RTTMs:         float64(time.Duration(b.rtt.Load()).Microseconds()) / 1000,
			BytesSent:     b.counted.sent.Load(),
			BytesReceived: b.counted.received.Load(),
			LinkedS:       int64(time.Since(b.since) / time.Second),
			Protocol:      int(b.out.p.ProtocolVersion()),
			Crossed:       b.in.crossed.Load(),
			Held:          b.in.held.Load() + b.out.held.Load(),
			Slowed:        b.in.slowed.Load(),
		})
	}
	return out
}

// bridgeIn takes a bridge's pushes: broadcasts of channels not bridged
// are refused (for good: they are taken and dropped), descriptors are
// marked with the bridge's island, and the whole is rate limited.
type bridgeIn struct {
	d      *Daemon
	island string
	bucket *bridgeBucket

	crossed atomic.Uint64 // envelopes stored from the bridge
	descs   atomic.Uint64 // descriptors that came in, new or not
	held    atomic.Uint64 // envelopes refused by the filter (in)
	slowed  atomic.Uint64 // pushes told to wait by the rate limit
}

func (in *bridgeIn) AcceptPush(from identity.Fingerprint, envs []gossip.Envelope, flow bool) (relay.PushResult, error) {
	if len(envs) == 0 {
		return relay.PushResult{}, nil
	}
	n := in.bucket.take(len(envs))
	if n < len(envs) && !flow {
		// A sender without flow control reads no partial answer: it
		// sends the whole push again later.
		in.bucket.give(n)
		in.slowed.Add(1)
		return relay.PushResult{}, relay.ErrRateLimited
	}
	if n == 0 {
		in.slowed.Add(1)
		if !flow {
			return relay.PushResult{}, relay.ErrRateLimited
		}
		return relay.PushResult{Taken: 0, RetryAfter: in.bucket.wait()}, nil
	}
	kept := make([]gossip.Envelope, 0, n)
	index := make([]int, 0, n) // kept[i] is envs[index[i]]
	for i, env := range envs[:n] {
		env, ok := in.admit(env)
		if !ok {
			in.held.Add(1)
			continue
		}
		kept = append(kept, env)
		index = append(index, i)
	}
	res := relay.PushResult{Taken: n}
	if n < len(envs) {
		res.RetryAfter = in.bucket.wait()
		in.slowed.Add(1)
	}
	if len(kept) == 0 {
		return res, nil
	}
	got, err := in.d.eng.AcceptPush(from, kept, flow)
	if err != nil {
		return got, err
	}
	in.crossed.Add(uint64(got.Accepted))
	res.Accepted = got.Accepted
	if taken := got.Taken; (taken != 0 || got.RetryAfter != 0) && taken < len(kept) {
		// The engine took only some: the rest come again.
		res.Taken = index[taken]
		res.RetryAfter = max(res.RetryAfter, got.RetryAfter)
	}
	return res, nil
}

// admit is what of env may come in from another island.
func (in *bridgeIn) admit(env gossip.Envelope) (gossip.Envelope, bool) {
	switch env.Kind {
	case schemas.Envelope_Kind_broadcast:
		return env, in.d.bridgedChannel(env.Destination)
	case schemas.Envelope_Kind_descriptor:
		in.descs.Add(1)
		signed, err := gossip.SignedBytes(env)
		if err != nil {
			return env, false
		}
		marked, err := descriptor.MarkIsland(signed, in.island)
		if err != nil {
			return env, false
		}
		var fp [32]byte
		copy(fp[:], env.Destination)
		out, err := gossip.NewSignedEnvelope(env.Kind, fp, marked, env.TTLSeconds, env.HopLimit)
		if err != nil {
			return env, false
		}
		return out, true
	}
	return env, true
}

func (in *bridgeIn) HandleSummary(from identity.Fingerprint, s relay.Summary) error {
	return in.d.eng.HandleSummary(from, s)
}

func (in *bridgeIn) HandleRaise(from identity.Fingerprint, raises []relay.HopRaise) error {
	return in.d.eng.HandleRaise(from, raises)
}

// bridgedChannel reports whether broadcasts to channel id dest cross.
func (d *Daemon) bridgedChannel(dest []byte) bool {
	for _, c := range d.cfg.Bridge.Channels {
		if string(c[:]) == string(dest) {
			return true
		}
	}
	return false
}

// bridgePeer is the relay's Peer for a bridge link: what must not leave
// the island (broadcasts of channels not bridged, descriptors from other
// islands) is taken and dropped instead of sent.
type bridgePeer struct {
	p        wire.Peer
	channels map[[32]byte]bool
	held     atomic.Uint64

	// sent holds the descriptors this link carried, oldest first in
	// order. The other side stores them marked, under another id, so
	// anti-entropy would find them missing there every round and send
	// them again: each goes once per link instead (a refreshed
	// descriptor is a new envelope and goes again).
	mu    sync.Mutex
	sent  map[gossip.ID]bool
	order []gossip.ID
}

// maxSentDescriptors bounds bridgePeer.sent: far more nodes than an
// island has.
const maxSentDescriptors = 8192

func newBridgePeer(p wire.Peer, channels [][32]byte) *bridgePeer {
	b := &bridgePeer{p: p, channels: map[[32]byte]bool{}, sent: map[gossip.ID]bool{}}
	for _, c := range channels {
		b.channels[c] = true
	}
	return b
}

// leaves reports whether env may go to another island.
func (b *bridgePeer) leaves(env gossip.Envelope) bool {
	switch env.Kind {
	case schemas.Envelope_Kind_broadcast:
		return len(env.Destination) == 32 && b.channels[[32]byte(env.Destination)]
	case schemas.Envelope_Kind_descriptor:
		signed, err := gossip.SignedBytes(env)
		if err != nil {
			return false
		}
		desc, err := descriptor.Verify(signed)
		return err == nil && desc.Island == "" && !b.wasSent(env.ID)
	case schemas.Envelope_Kind_decoy:
		return false
	}
	return true
}

// wasSent reports whether the descriptor id went over this link.
func (b *bridgePeer) wasSent(id gossip.ID) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.sent[id]
}

// markSent records the descriptors among envs as sent.
func (b *bridgePeer) markSent(envs []gossip.Envelope) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, env := range envs {
		if env.Kind != schemas.Envelope_Kind_descriptor || b.sent[env.ID] {
			continue
		}
		if len(b.order) >= maxSentDescriptors {
			delete(b.sent, b.order[0])
			b.order = b.order[1:]
		}
		b.sent[env.ID] = true
		b.order = append(b.order, env.ID)
	}
}

func (b *bridgePeer) Push(ctx context.Context, envs []gossip.Envelope) (relay.PushResult, error) {
	kept := make([]gossip.Envelope, 0, len(envs))
	index := make([]int, 0, len(envs))
	for i, env := range envs {
		if b.leaves(env) {
			kept = append(kept, env)
			index = append(index, i)
		} else {
			b.held.Add(1)
		}
	}
	if len(kept) == 0 {
		return relay.PushResult{Taken: len(envs)}, nil
	}
	res, err := b.p.Push(ctx, kept)
	if err != nil {
		return res, err
	}
	if (res.Taken != 0 || res.RetryAfter != 0) && res.Taken < len(kept) {
		b.markSent(kept[:res.Taken])
		res.Taken = index[res.Taken]
	} else {
		b.markSent(kept)
		res.Taken = len(envs)
	}
	return res, nil
}

func (b *bridgePeer) Summary(ctx context.Context, s relay.Summary) error { return b.p.Summary(ctx, s) }

func (b *bridgePeer) Raise(ctx context.Context, raises []relay.HopRaise) error {
	return b.p.Raise(ctx, raises)
}

// ProtocolVersion is the protocol version the bridge link agreed on.
func (b *bridgePeer) ProtocolVersion() uint16 { return b.p.ProtocolVersion() }

// bridgeBucket is a token bucket: rate envelopes a second, twice that at
// once.
type bridgeBucket struct {
	mu     sync.Mutex
	now    func() time.Time
	rate   float64
	tokens float64
	at     time.Time
}

func newBridgeBucket(rate float64, now func() time.Time) *bridgeBucket {
	if rate <= 0 {
		rate = 50
	}
	return &bridgeBucket{now: now, rate: rate, tokens: 2 * rate, at: now()}
}

// take takes up to n tokens and returns how many it took.
func (b *bridgeBucket) take(n int) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	now := b.now()
	b.tokens = min(2*b.rate, b.tokens+now.Sub(b.at).Seconds()*b.rate)
	b.at = now
	got := min(n, int(b.tokens))
	b.tokens -= float64(got)
	return got
}

// give puts back n tokens taken and not used.
func (b *bridgeBucket) give(n int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.tokens = min(2*b.rate, b.tokens+float64(n))
}

// wait is how long until the next token.
func (b *bridgeBucket) wait() time.Duration {
	b.mu.Lock()
	defer b.mu.Unlock()
	need := 1 - b.tokens
	if need <= 0 {
		return 0
	}
	return time.Duration(need / b.rate * float64(time.Second))
}

// countingConn counts the bytes of a bridge link (status).
type countingConn struct {
	rwc            io.ReadWriteCloser
	sent, received atomic.Uint64
}

func (c *countingConn) Read(p []byte) (int, error) {
	n, err := c.rwc.Read(p)
	c.received.Add(uint64(n))
	return n, err
}

func (c *countingConn) Write(p []byte) (int, error) {
	n, err := c.rwc.Write(p)
	c.sent.Add(uint64(n))
	return n, err
}

func (c *countingConn) Close() error { return c.rwc.Close() }
