package daemon

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/quicproquo/qpq/gossip"
	"github.com/quicproquo/qpq/gossip/relay"
	"github.com/quicproquo/qpq/gossip/wire"
	"github.com/quicproquo/qpq/mesh/descriptor"
	"github.com/quicproquo/qpq/mesh/identity"
	"github.com/quicproquo/qpq/mesh/onion"
	"github.com/quicproquo/qpq/node/control"
	"github.com/quicproquo/qpq/schemas"
)

// Onion relaying (mesh/onion). A packet reaches this node from a
// neighbour or a dialling node (MeshPeer.onion), from store and forward
// (an onion envelope addressed to this node, when the relay before could
// not reach it), or from a client for its first relay (Node.sendOnion:
// this node is then the entry and only forwards). The node peels one
// layer with the key the packet's epoch names, refuses replays (the
// keyring's caches, kept in the store), and forwards what is left to the
// next relay: over a link when there is one, else over a dialled link to
// the relay's descriptor address, else as an onion envelope addressed to
// it. As the exit it reassembles the message and injects it into store
// and forward as a client's enqueue would be, under a quota of its
// predecessor relay and a cap of its own. It sees only the relay before
// and the one after.

const (
	onionKeysFile = "onion.keys"
	onionTick     = time.Minute
	// maxOnionWork bounds the packets being peeled and forwarded at once;
	// past it a packet is dropped (counted).
	maxOnionWork      = 32
	onionForwardLimit = 20 * time.Second
	// A packet sent on by store and forward waits at most this long.
	onionEnvelopeTTL  = time.Hour
	onionEnvelopeHops = 16
	// maxOnionDescs bounds the relays' descriptors kept for clients.
	maxOnionDescs = 1024
	// maxDescriptorSample is the most descriptors one call returns.
	maxDescriptorSample = 64
	// The exit's own cap on what it injects (there is no client to
	// charge): messages per second and burst.
	onionExitRate  = 20
	onionExitBurst = 200
)

// onionRelay is the daemon's onion state.
type onionRelay struct {
	d     *Daemon
	keys  *onion.Keyring // nil: this node does not relay
	reasm *onion.Reassembler
	work  chan struct{} // semaphore of maxOnionWork

	mu        sync.Mutex
	descs     map[identity.Fingerprint][]byte           // relays' signed descriptors
	waiting   map[[onion.ReplyIDSize]byte]chan struct{} // clients' sendOnion calls waiting for replies
	exitToken float64
	exitLast  time.Time

	peeled, forwarded, stored, exited, entered  atomic.Int64
	replies, delivered, cover                   atomic.Int64
	replays, macFailures, unknownEpoch, dropped atomic.Int64

	loops   loops        // loop cover traffic (loops.go)
	mixHeld atomic.Int64 // packets the mix holds now
}

var _ onion.ReplayCache = (*storeCache)(nil)

// storeCache is the node's store as the keyring's replay cache.
type storeCache struct{ d *Daemon }

func (c *storeCache) ReplayCreate(key []byte) error { return c.d.st.ReplayCreate(key) }
func (c *storeCache) ReplayCount(key []byte) (bool, int, error) {
	return c.d.st.ReplayCount(key)
}
func (c *storeCache) ReplayAdd(key, tag []byte) (bool, error) { return c.d.st.ReplayAdd(key, tag) }
func (c *storeCache) ReplayKeys() ([][]byte, error)           { return c.d.st.ReplayKeys() }
func (c *storeCache) ReplayDrop(key []byte) error             { return c.d.st.ReplayDrop(key) }

func newOnionRelay(d *Daemon) (*onionRelay, error) {
	r := &onionRelay{d: d, reasm: onion.NewReassembler(onion.ReassemblyOptions{}), work: make(chan struct{}, maxOnionWork),
		descs: map[identity.Fingerprint][]byte{}, waiting: map[[onion.ReplyIDSize]byte]chan struct{}{},
		exitToken: onionExitBurst, exitLast: time.Now()}
	if !d.cfg.OnionRelay || d.hello.Version < wire.OnionVersion {
		// Off, or (a test's stand-in for an older node) speaking a
		// protocol before onion relaying.
		return r, nil
	}
	file := ""
	if d.cfg.DataDir != "" {
		file = filepath.Join(d.cfg.DataDir, onionKeysFile)
	}
	k, err := onion.NewKeyring(onion.KeyringOptions{Period: d.cfg.OnionKeyPeriod, Overlap: descriptorLifetime,
		File: file, Cache: &storeCache{d}, Now: d.st.Elapsed, Log: d.log})
	if err != nil {
		return nil, fmt.Errorf("onion keys: %w", err)
	}
	r.keys = k
	return r, nil
}

// run rotates the keys when due and publishes the descriptor with the new
// one.
func (r *onionRelay) run(ctx context.Context) {
	if r.keys == nil {
		return
	}
	if rate := r.d.cfg.LoopRate; rate > 0 {
		var wg sync.WaitGroup
		defer wg.Wait()
		wg.Add(1)
		go func() {
			defer wg.Done()
			r.runLoops(ctx, rate)
		}()
	}
	t := time.NewTicker(onionTick)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		rotated, err := r.keys.Tick()
		if err != nil {
			r.d.log.Error("onion key rotation", "err", err)
			continue
		}
		if rotated {
			if err := r.d.publishDescriptor(); err != nil {
				r.d.log.Warn("descriptor with the new onion key not published", "err", err)
			}
		}
	}
}

// descriptorOnion is the onion part of this node's descriptor.
func (r *onionRelay) descriptorOnion() descriptor.Onion {
	if r.keys == nil {
		return descriptor.Onion{Key: r.d.id.Onion.PublicKey()}
	}
	epoch, pub := r.keys.Current()
	return descriptor.Onion{Key: pub, Epoch: epoch, Version: onion.Version}
}

// observe keeps the descriptors of nodes that relay onion packets, for
// the clients' route choice.
func (r *onionRelay) observe(desc descriptor.Descriptor, signed []byte) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if desc.OnionVersion != onion.Version {
		delete(r.descs, desc.FP) // no longer relays
		return
	}
	if _, ok := r.descs[desc.FP]; !ok && len(r.descs) >= maxOnionDescs {
		return
	}
	r.descs[desc.FP] = append([]byte(nil), signed...)
}

// sample returns up to n relays' signed descriptors, at random.
func (r *onionRelay) sample(n int) [][]byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	all := make([][]byte, 0, len(r.descs))
	for _, b := range r.descs {
		all = append(all, b)
	}
	rand.Shuffle(len(all), func(i, j int) { all[i], all[j] = all[j], all[i] })
	return all[:min(n, len(all))]
}

// spawn runs fn on a goroutine the daemon waits for, within the work
// bound; false: over the bound or shutting down (nothing runs).
func (r *onionRelay) spawn(fn func()) bool {
	select {
	case r.work <- struct{}{}:
	default:
		return false
	}
	d := r.d
	d.mu.Lock()
	if d.ctx.Err() != nil {
		d.mu.Unlock()
		<-r.work
		return false
	}
	d.wg.Add(1)
	d.mu.Unlock()
	go func() {
		defer d.wg.Done()
		defer func() { <-r.work }()
		fn()
	}()
	return true
}

// receive takes a packet whose relay this node is, from the predecessor
// named by from.
func (r *onionRelay) receive(from string, pkt []byte) {
	if mean := r.d.cfg.MixDelay; mean > 0 && r.hold() {
		// The stop-and-go mix: held for an exponential time, so the
		// order and timing in which packets leave do not follow how they
		// came in.
		time.AfterFunc(time.Duration(rand.ExpFloat64()*float64(mean)), func() {
			r.mixHeld.Add(-1)
			if !r.spawn(func() { r.peel(from, pkt) }) {
				r.dropped.Add(1)
			}
		})
		return
	}
	if !r.spawn(func() { r.peel(from, pkt) }) {
		r.dropped.Add(1)
	}
}

// maxMixHeld bounds the packets the mix holds (4 KiB each); past it a
// packet goes on at once.
const maxMixHeld = 256

// hold takes one of the mix's places, if there is one.
func (r *onionRelay) hold() bool {
	if r.mixHeld.Add(1) > maxMixHeld {
		r.mixHeld.Add(-1)
		return false
	}
	return true
}

// peel takes this node's layer off and passes the rest on.
func (r *onionRelay) peel(from string, pkt []byte) {
	if r.keys == nil {
		r.dropped.Add(1)
		return
	}
	p, err := r.keys.Peel(pkt)
	switch {
	case err == nil:
	case errors.Is(err, onion.ErrReplay):
		r.replays.Add(1)
		return
	case errors.Is(err, onion.ErrMAC):
		r.macFailures.Add(1)
		return
	case errors.Is(err, onion.ErrUnknownEpoch):
		r.unknownEpoch.Add(1)
		return
	default:
		r.dropped.Add(1)
		r.d.log.Debug("onion packet refused", "from", from, "err", err)
		return
	}
	r.peeled.Add(1)
	switch p.Action {
	case onion.Exit:
		r.exit(from, p.Payload)
	case onion.Deliver:
		r.deliver(p.Data)
	default:
		r.forward(p.Next, p.Packet)
	}
}

// forward hands pkt to the relay next: over a link or a dialled link, or
// else by store and forward. With decoys on callTo never dials, so a
// relay that is not a neighbour gets the packet by store and forward.
func (r *onionRelay) forward(next identity.Fingerprint, pkt []byte) {
	d := r.d
	if next.Equal(d.id.Fingerprint()) {
		r.peel("self", pkt) // a route through this node twice
		return
	}
	if d.sendCells(next, pkt) {
		r.forwarded.Add(1)
		return
	}
	ctx, cancel := context.WithTimeout(d.ctx, onionForwardLimit)
	defer cancel()
	err := d.callTo(ctx, next, d.place.addrsOf(next), func(ctx context.Context, p wire.Peer) error {
		return p.Onion(ctx, pkt)
	})
	if err == nil {
		r.forwarded.Add(1)
		return
	}
	if d.ctx.Err() != nil {
		return
	}
	d.log.Debug("onion packet not handed over; sending it by store and forward", "next", next, "err", err)
	r.store(next, pkt)
}

// store sends pkt to next by store and forward, as an onion envelope
// addressed to it.
func (r *onionRelay) store(next identity.Fingerprint, pkt []byte) {
	d := r.d
	env := gossip.Envelope{Kind: schemas.Envelope_Kind_onion, Destination: append([]byte(nil), next[:]...), Payload: pkt,
		TTLSeconds: uint32(onionEnvelopeTTL / time.Second), HopLimit: uint8(min(d.cfg.MaxHops, onionEnvelopeHops))}
	env.ID = gossip.ComputeID(env.Kind, env.Destination, nil, env.Payload)
	if _, err := d.eng.Accept(env, relay.Source{Client: "onion"}); err != nil {
		r.dropped.Add(1)
		d.log.Debug("onion envelope refused", "next", next, "err", err)
		return
	}
	r.stored.Add(1)
}

// onEnvelope takes an onion envelope addressed to this node out of store
// and forward: it is peeled like a packet from a link and its copy here
// deleted (a tombstone keeps it from coming back).
func (r *onionRelay) onEnvelope(env gossip.Envelope) {
	if !identity.Fingerprint(env.Destination).Equal(r.d.id.Fingerprint()) || len(env.Payload) != onion.Size {
		return
	}
	pkt := append([]byte(nil), env.Payload...)
	id := env.ID
	if !r.spawn(func() {
		if _, err := r.d.st.Delete(id); err != nil {
			r.d.log.Debug("onion envelope not deleted", "id", id, "err", err)
		}
		r.peel("store and forward", pkt)
	}) {
		r.dropped.Add(1)
	}
}

// exit reassembles what the packets carry and injects it; cover is
// dropped unread, and answered like a message if it asks.
func (r *onionRelay) exit(from string, payload []byte) {
	if onion.IsCover(payload) {
		r.cover.Add(1)
		if reply := onion.CoverReply(payload); reply != nil && r.takeExit() {
			r.replies.Add(1)
			r.forward(reply.First, reply.Packet())
		}
		return
	}
	msg, reply, err := r.reasm.Add(from, payload)
	if err != nil {
		r.dropped.Add(1)
		r.d.log.Debug("onion fragment refused", "from", from, "err", err)
		return
	}
	if msg == nil {
		return
	}
	env, err := gossip.Unmarshal(msg)
	if err == nil && env.Kind != schemas.Envelope_Kind_dm {
		err = fmt.Errorf("the exit injects DMs only, not %s", env.Kind)
	}
	if err == nil && !r.takeExit() {
		err = errors.New("over the exit's cap")
	}
	if err == nil {
		_, err = r.d.enqueueLocal(env, "onion "+from)
	}
	if err != nil {
		r.dropped.Add(1)
		r.d.log.Debug("onion exit refused a message", "from", from, "err", err)
		return
	}
	r.exited.Add(1)
	if reply != nil {
		// Stored: say so back along the sender's return route.
		r.replies.Add(1)
		r.forward(reply.First, reply.Packet())
	}
}

// deliver wakes the client call waiting for a reply id (data's first
// bytes); a reply nobody waits for (late, or not for here) is dropped.
func (r *onionRelay) deliver(data [onion.SlotDataSize]byte) {
	var id [onion.ReplyIDSize]byte
	copy(id[:], data[:])
	r.mu.Lock()
	ch := r.waiting[id]
	delete(r.waiting, id)
	r.mu.Unlock()
	if ch == nil {
		r.dropped.Add(1)
		return
	}
	r.delivered.Add(1)
	close(ch)
}

// maxOnionWaiting bounds the sendOnion calls waiting for replies.
const maxOnionWaiting = 1024

// await registers a wait for the reply id; the returned func unregisters.
func (r *onionRelay) await(id [onion.ReplyIDSize]byte) (<-chan struct{}, func(), error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.waiting) >= maxOnionWaiting {
		return nil, nil, errors.New("send onion: too many calls waiting for replies")
	}
	if _, dup := r.waiting[id]; dup {
		return nil, nil, errors.New("send onion: reply id in use")
	}
	ch := make(chan struct{})
	r.waiting[id] = ch
	return ch, func() {
		r.mu.Lock()
		if r.waiting[id] == ch {
			delete(r.waiting, id)
		}
		r.mu.Unlock()
	}, nil
}

func (r *onionRelay) takeExit() bool {
	now := time.Now()
	r.mu.Lock()
	defer r.mu.Unlock()
	r.exitToken = min(onionExitBurst, r.exitToken+now.Sub(r.exitLast).Seconds()*onionExitRate)
	r.exitLast = now
	if r.exitToken < 1 {
		return false
	}
	r.exitToken--
	return true
}

// enter takes a packet a client hands this node for its first relay.
func (r *onionRelay) enter(first identity.Fingerprint, pkt []byte) error {
	if !r.spawn(func() { r.forward(first, pkt) }) {
		r.dropped.Add(1)
		return errors.New("send onion: node busy, try again")
	}
	r.entered.Add(1)
	return nil
}

func (r *onionRelay) stats() control.Onion {
	s := control.Onion{Relay: r.keys != nil, Peeled: r.peeled.Load(), Forwarded: r.forwarded.Load(), Stored: r.stored.Load(),
		Exited: r.exited.Load(), Entered: r.entered.Load(), Replays: r.replays.Load(), MACFailures: r.macFailures.Load(),
		UnknownEpoch: r.unknownEpoch.Load(), Dropped: r.dropped.Load(), Reassembling: r.reasm.Stats().Pending,
		Replies: r.replies.Load(), Delivered: r.delivered.Load(), Cover: r.cover.Load(), Mixing: r.mixHeld.Load()}
	r.mu.Lock()
	s.Relays = len(r.descs)
	r.mu.Unlock()
	if r.keys != nil {
		ks := r.keys.Stats()
		s.Epoch, s.Keys = ks.Epoch, ks.Keys
	}
	return s
}

// onionFrom is what a link's or dialled link's MeshPeer hands onion
// packets to.
type onionFrom struct {
	r  *onionRelay
	in *inDialled // set for dialled links: a packet spends one token
}

func (o onionFrom) Onion(from identity.Fingerprint, pkt []byte) error {
	if o.in != nil {
		if n, _ := o.in.take(1); n == 0 {
			return errors.New("onion: over this link's budget")
		}
	}
	o.r.receive("relay "+from.String(), pkt)
	return nil
}

var _ wire.Onions = onionFrom{}

// enqueueLocal stores an envelope a client (or, as the exit, an onion
// route) hands this node, as enqueue does: with placement on a DM is held
// and placed instead of flooded.
func (d *Daemon) enqueueLocal(env gossip.Envelope, label string) (bool, error) {
	placed := env.Kind == schemas.Envelope_Kind_dm && d.place.on()
	added, err := d.eng.Accept(env, relay.Source{Client: label, Hold: placed})
	if err != nil {
		return false, err
	}
	if added && placed && d.eng.Held(env.ID) {
		d.place.submit(env)
	}
	return added, nil
}
