package daemon

// Mailbox placement (issue 12, item 5; gossip/placement has the scheme):
// with config Placement K > 0, a DM a client of this node enqueues is not
// flooded. It is stored here held (relay's Hold) and handed with wire's
// place to the K nodes gossip/placement picks for its recipient's mailbox
// bucket among the node descriptors this node has known for at least
// PlacementMinAge; those hold it too. The recipient's node (any node whose
// client authenticated as that user within localUserFor) pulls the
// bucket from the nodes it picks, by its own view, every PlacementPull,
// stores what it gets (held) and the client reads it as any DM. The
// receipt floods as before: it deletes every copy, the placed ones
// included, and reaches the sender's node for the chat's delivery state.
//
// Every failure floods, so placement can cost a DM time but never lose
// it: no eligible node, or none of them reachable, floods at once; no
// receipt within PlacementFallback floods then (views that differ, nodes
// down or hostile); a holder restarting forgets what it held, and
// anti-entropy floods it.
//
// Every node serves place and pull (bounded by the store's quotas and
// this file's index); only nodes with Placement on place their clients'
// DMs and pull for their users, so a mesh turns it on everywhere at once.

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/quicproquo/qpq/gossip"
	"github.com/quicproquo/qpq/gossip/placement"
	"github.com/quicproquo/qpq/gossip/relay"
	"github.com/quicproquo/qpq/gossip/wire"
	"github.com/quicproquo/qpq/mesh/descriptor"
	"github.com/quicproquo/qpq/mesh/identity"
	"github.com/quicproquo/qpq/schemas"
)

const (
	// maxPlaceNodes bounds the node directory (descriptors known).
	maxPlaceNodes = 4096
	// maxBoxed bounds the DMs indexed as placed on this node; past it a
	// placed DM is flooded instead.
	maxBoxed = 1 << 16
	// maxLocalUsers bounds the users pulled for; localUserFor is how
	// long after its client last authenticated a user is pulled for.
	maxLocalUsers = 256
	localUserFor  = 24 * time.Hour
	// placeQueue bounds the DMs waiting to be placed; a full queue floods.
	placeQueue = 256
	// placeTimeout bounds one place or pull call, the dial included.
	placeTimeout = 15 * time.Second
	// maxPullPages bounds the pages read from one node per bucket per round.
	maxPullPages = 16
	// saveNodesEvery paces the first-seen file's writes.
	saveNodesEvery = 10 * time.Minute
	// pruneEvery paces the check of indexed DMs still stored.
	pruneEvery = 5 * time.Minute
)

// placeNode is one node this node knows a descriptor of.
type placeNode struct {
	addrs     []string
	firstSeen time.Duration // on the store's elapsed clock
}

// PlacementStats counts placement's work since start.
type PlacementStats struct {
	K         int   // mailbox nodes per DM; 0: placement off
	Nodes     int   // nodes known (descriptors)
	Eligible  int   // of them, known for at least the minimum age
	Held      int   // DMs stored here and held back from flooding
	Boxed     int   // DMs placed on this node, indexed for pulls
	Placed    int64 // DMs placed on at least one node
	Flooded   int64 // DMs flooded at once: no node eligible or reachable
	Fallbacks int64 // placed DMs flooded because no receipt came in time
	Pulled    int64 // DMs pulled from mailbox nodes and newly stored
}

// placer is the daemon's placement state and its owner goroutine.
type placer struct {
	d         *Daemon
	o         placement.Options
	fallback  time.Duration
	pullEvery time.Duration
	nodesPath string // first-seen records; "" without a store dir

	work chan gossip.Envelope
	kick chan struct{} // pull now (a user came)

	mu      sync.Mutex // guards the fields below
	nodes   map[identity.Fingerprint]*placeNode
	dirty   bool
	boxes   map[uint32]map[gossip.ID]struct{} // placed on this node, by bucket
	boxed   int
	users   map[identity.Fingerprint]time.Time // local users: last authenticated
	pending map[gossip.ID]time.Time            // our clients' placed DMs: when they flood

	placed, flooded, fallbacks, pulled atomic.Int64
}

func newPlacer(d *Daemon) *placer {
	c := d.cfg
	p := &placer{
		d: d,
		o: placement.Options{K: c.Placement, MinAge: c.PlacementMinAge,
			BucketBits: placement.DefaultBucketBits}.WithDefaults(),
		fallback:  c.PlacementFallback,
		pullEvery: c.PlacementPull,
		kick:      make(chan struct{}, 1),
		nodes:     map[identity.Fingerprint]*placeNode{},
		boxes:     map[uint32]map[gossip.ID]struct{}{},
		users:     map[identity.Fingerprint]time.Time{},
		pending:   map[gossip.ID]time.Time{},
	}
	if c.Placement > 0 {
		// Only a node that places queues DMs (a nil channel: run never
		// selects it); an idle queue of Envelopes is ~100 KiB.
		p.work = make(chan gossip.Envelope, placeQueue)
	}
	if c.PlacementMinAge <= 0 {
		p.o.MinAge = -1 // none (placement.Options reads 0 as unset)
	}
	if p.fallback <= 0 {
		p.fallback = time.Hour
	}
	if p.pullEvery <= 0 {
		p.pullEvery = 30 * time.Second
	}
	if c.Store != "" {
		p.nodesPath = c.Store + ".nodes"
	}
	return p
}

// on says whether this node places its clients' DMs and pulls for its
// users.
func (p *placer) on() bool { return p.d.cfg.Placement > 0 }

// now is placement's clock: the store's elapsed counter, which survives
// restarts as the first-seen records (kept beside the store) do.
func (p *placer) now() time.Duration { return p.d.st.Elapsed() }

// observe records a node's descriptor: its addresses, and when it was
// first seen if it is new.
func (p *placer) observe(fp identity.Fingerprint, addrs []string) {
	now := p.now()
	p.mu.Lock()
	defer p.mu.Unlock()
	if n := p.nodes[fp]; n != nil {
		n.addrs = slices.Clone(addrs)
		return
	}
	if len(p.nodes) >= maxPlaceNodes {
		return // the oldest-known nodes are the ones placement prefers
	}
	p.nodes[fp] = &placeNode{addrs: slices.Clone(addrs), firstSeen: now}
	p.dirty = true
}

// sawUser records that a client authenticated as user here.
func (p *placer) sawUser(user identity.Fingerprint) {
	if !p.on() {
		return
	}
	now := time.Now()
	p.mu.Lock()
	_, known := p.users[user]
	if !known && len(p.users) >= maxLocalUsers {
		var oldest identity.Fingerprint
		var at time.Time
		for u, t := range p.users {
			if at.IsZero() || t.Before(at) {
				oldest, at = u, t
			}
		}
		delete(p.users, oldest)
	}
	p.users[user] = now
	p.mu.Unlock()
	if !known {
		select {
		case p.kick <- struct{}{}:
		default:
		}
	}
}

// submit queues a DM a client enqueued (stored here, held) for placing;
// with the queue full it floods at once.
func (p *placer) submit(env gossip.Envelope) {
	select {
	case p.work <- env:
	default:
		p.flooded.Add(1)
		p.d.eng.Release(env.ID)
	}
}

// target is one mailbox node for a bucket.
type target struct {
	fp    identity.Fingerprint
	addrs []string
	self  bool
}

// targets returns the mailbox nodes of bucket by this node's view.
func (p *placer) targets(bucket uint32) []target {
	self := p.d.id.Fingerprint()
	now := p.now()
	p.mu.Lock()
	cands := make([]placement.Candidate, 0, len(p.nodes)+1)
	cands = append(cands, placement.Candidate{FP: self}) // known since ever
	for fp, n := range p.nodes {
		if !fp.Equal(self) {
			cands = append(cands, placement.Candidate{FP: fp, FirstSeen: n.firstSeen})
		}
	}
	picked := placement.Place(bucket, cands, now, p.o)
	out := make([]target, 0, len(picked))
	for _, fp := range picked {
		t := target{fp: fp, self: fp.Equal(self)}
		if n := p.nodes[fp]; n != nil {
			t.addrs = slices.Clone(n.addrs)
		}
		out = append(out, t)
	}
	p.mu.Unlock()
	return out
}

// bucket is the mailbox bucket of a DM's destination.
func (p *placer) bucket(dest []byte) uint32 {
	return placement.Bucket(identity.Fingerprint(dest), p.o.BucketBits)
}

// run is the placer's owner goroutine until ctx ends: it places queued
// DMs, pulls for local users, floods placed DMs whose receipt is late and
// keeps the first-seen records.
func (p *placer) run(ctx context.Context) {
	p.load()
	p.scanDescriptors()
	defer p.save()
	pull := time.NewTicker(p.pullEvery)
	defer pull.Stop()
	var lastSave, lastPrune time.Time
	lastSave, lastPrune = time.Now(), time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case env := <-p.work:
			p.place(ctx, env)
		case <-p.kick:
			p.pullAll(ctx)
		case <-pull.C:
			p.pullAll(ctx)
			p.checkFallbacks()
			if time.Since(lastSave) >= saveNodesEvery {
				p.save()
				lastSave = time.Now()
			}
			if time.Since(lastPrune) >= pruneEvery {
				p.prune()
				lastPrune = time.Now()
			}
		}
	}
}

// place hands one held DM to its mailbox nodes, or floods it.
func (p *placer) place(ctx context.Context, env gossip.Envelope) {
	b := p.bucket(env.Destination)
	var ok atomic.Int32
	var wg sync.WaitGroup
	// In parallel: one node that is down costs its dial timeout once,
	// not once per mailbox node.
	for _, t := range p.targets(b) {
		if t.self {
			if p.box(b, env.ID) {
				ok.Add(1)
			}
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			cctx, cancel := context.WithTimeout(ctx, placeTimeout)
			defer cancel()
			err := p.d.callTo(cctx, t.fp, t.addrs, func(ctx context.Context, peer wire.Peer) error {
				_, err := peer.Place(ctx, []gossip.Envelope{env})
				return err
			})
			if err != nil {
				p.d.log.Debug("placement failed", "node", t.fp, "err", err)
				return
			}
			ok.Add(1)
		}()
	}
	wg.Wait()
	if ok.Load() == 0 {
		p.flooded.Add(1)
		p.d.eng.Release(env.ID)
		return
	}
	p.mu.Lock()
	full := len(p.pending) >= maxBoxed
	if !full {
		p.pending[env.ID] = time.Now().Add(p.fallback)
	}
	p.mu.Unlock()
	if full {
		// No room to wait for its receipt: the mailbox nodes have it,
		// and so will everyone.
		p.flooded.Add(1)
		p.d.eng.Release(env.ID)
		return
	}
	p.placed.Add(1)
}

// box indexes a DM placed on this node; false when the index is full.
func (p *placer) box(bucket uint32, id gossip.ID) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	ids := p.boxes[bucket]
	if _, ok := ids[id]; ok {
		return true
	}
	if p.boxed >= maxBoxed {
		return false
	}
	if ids == nil {
		ids = map[gossip.ID]struct{}{}
		p.boxes[bucket] = ids
	}
	ids[id] = struct{}{}
	p.boxed++
	return true
}

func (p *placer) unbox(bucket uint32, id gossip.ID) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if ids := p.boxes[bucket]; ids != nil {
		if _, ok := ids[id]; ok {
			delete(ids, id)
			p.boxed--
			if len(ids) == 0 {
				delete(p.boxes, bucket)
			}
		}
	}
}

// checkFallbacks floods the placed DMs still stored past their time.
func (p *placer) checkFallbacks() {
	now := time.Now()
	var due []gossip.ID
	p.mu.Lock()
	for id, at := range p.pending {
		if !now.Before(at) {
			due = append(due, id)
			delete(p.pending, id)
		}
	}
	p.mu.Unlock()
	for _, id := range due {
		if _, ok, _ := p.d.st.Get(id); !ok {
			continue // its receipt came
		}
		p.fallbacks.Add(1)
		p.d.eng.Release(id)
	}
}

// pullAll pulls the buckets of the users whose clients use this node.
func (p *placer) pullAll(ctx context.Context) {
	if !p.on() {
		return
	}
	cutoff := time.Now().Add(-localUserFor)
	buckets := map[uint32]bool{}
	p.mu.Lock()
	for u, at := range p.users {
		if at.Before(cutoff) {
			delete(p.users, u)
			continue
		}
		buckets[placement.Bucket(u, p.o.BucketBits)] = true
	}
	p.mu.Unlock()
	for b := range buckets {
		for _, t := range p.targets(b) {
			if ctx.Err() != nil {
				return
			}
			if !t.self {
				p.pullFrom(ctx, t, b)
			}
		}
	}
}

// pullFrom reads bucket b's DMs from one mailbox node.
func (p *placer) pullFrom(ctx context.Context, t target, b uint32) {
	var after *gossip.ID
	for range maxPullPages {
		var envs []gossip.Envelope
		var next *gossip.ID
		cctx, cancel := context.WithTimeout(ctx, placeTimeout)
		err := p.d.callTo(cctx, t.fp, t.addrs, func(ctx context.Context, peer wire.Peer) error {
			var err error
			envs, next, err = peer.Pull(ctx, wire.PullRequest{Bucket: b, Bits: uint8(p.o.BucketBits), After: after, Limit: wire.MaxPull})
			return err
		})
		cancel()
		if err != nil {
			p.d.log.Debug("pull failed", "node", t.fp, "bucket", b, "err", err)
			return
		}
		// Only DMs of this bucket: a mailbox node cannot make us store
		// other users' mail or other kinds.
		keep := envs[:0]
		for _, env := range envs {
			if env.Kind == schemas.Envelope_Kind_dm && p.bucket(env.Destination) == b {
				keep = append(keep, env)
			}
		}
		n, err := p.d.eng.AcceptPulled(relay.Source{Peer: t.fp}, keep)
		if err != nil {
			p.d.log.Warn("pulled DMs not stored", "node", t.fp, "err", err)
			return
		}
		p.pulled.Add(int64(n))
		if next == nil || (after != nil && *next == *after) {
			return
		}
		after = next
	}
}

// prune drops indexed DMs no longer stored.
func (p *placer) prune() {
	p.mu.Lock()
	type entry struct {
		b  uint32
		id gossip.ID
	}
	var all []entry
	for b, ids := range p.boxes {
		for id := range ids {
			all = append(all, entry{b, id})
		}
	}
	p.mu.Unlock()
	for _, e := range all {
		if _, ok, err := p.d.st.Get(e.id); err == nil && !ok {
			p.unbox(e.b, e.id)
		}
	}
}

// scanDescriptors learns the nodes whose descriptors are stored already
// (after a restart none arrives as new).
func (p *placer) scanDescriptors() {
	var ids []gossip.ID
	p.d.st.IDs(func(id gossip.ID, k schemas.Envelope_Kind) bool {
		if k == schemas.Envelope_Kind_descriptor {
			ids = append(ids, id)
		}
		return len(ids) < maxPlaceNodes
	})
	for _, id := range ids {
		env, ok, err := p.d.st.Get(id)
		if err != nil || !ok {
			continue
		}
		signed, err := gossip.SignedBytes(env)
		if err != nil {
			continue
		}
		desc, err := descriptor.Verify(signed)
		if err != nil || !p.d.ofThisIsland(desc) {
			continue
		}
		p.observe(desc.FP, desc.Addrs)
		p.d.onion.observe(desc, signed)
	}
}

// addrsOf returns the addresses of node fp's descriptor, if known.
func (p *placer) addrsOf(fp identity.Fingerprint) []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	if n := p.nodes[fp]; n != nil {
		return slices.Clone(n.addrs)
	}
	return nil
}

// The first-seen file: one line per node, "<fingerprint> <first seen in
// ns on the store's elapsed clock>". It lives beside the store because
// that clock does: on a router both are in /tmp and go together.

func (p *placer) load() {
	if p.nodesPath == "" {
		return
	}
	f, err := os.Open(p.nodesPath)
	if errors.Is(err, os.ErrNotExist) {
		return
	}
	if err != nil {
		p.d.log.Warn("placement: node records not read; nodes count as new", "path", p.nodesPath, "err", err)
		return
	}
	defer f.Close()
	now := p.now()
	bad := 0
	sc := bufio.NewScanner(f)
	p.mu.Lock()
	defer p.mu.Unlock()
	for sc.Scan() && len(p.nodes) < maxPlaceNodes {
		fpText, atText, ok := strings.Cut(sc.Text(), " ")
		fp, err := identity.ParseFingerprint(fpText)
		at, aerr := strconv.ParseInt(atText, 10, 64)
		if !ok || err != nil || aerr != nil || at < 0 || time.Duration(at) > now {
			bad++
			continue
		}
		p.nodes[fp] = &placeNode{firstSeen: time.Duration(at)}
	}
	if bad > 0 || sc.Err() != nil {
		p.d.log.Warn("placement: damaged node records skipped; those nodes count as new", "path", p.nodesPath, "lines", bad, "err", sc.Err())
	}
}

func (p *placer) save() {
	p.mu.Lock()
	if p.nodesPath == "" || !p.dirty {
		p.mu.Unlock()
		return
	}
	var b strings.Builder
	for fp, n := range p.nodes {
		fmt.Fprintf(&b, "%s %d\n", fp, int64(n.firstSeen))
	}
	p.dirty = false
	p.mu.Unlock()
	tmp := p.nodesPath + ".tmp"
	err := os.WriteFile(tmp, []byte(b.String()), 0o600)
	if err == nil {
		err = os.Rename(tmp, p.nodesPath)
	}
	if err != nil {
		p.d.log.Warn("placement: node records not saved", "path", p.nodesPath, "err", err)
		p.mu.Lock()
		p.dirty = true
		p.mu.Unlock()
	}
}

// stats reports placement for status.
func (p *placer) stats() PlacementStats {
	now := p.now()
	s := PlacementStats{K: p.d.cfg.Placement, Held: p.d.eng.HeldCount(),
		Placed: p.placed.Load(), Flooded: p.flooded.Load(), Fallbacks: p.fallbacks.Load(), Pulled: p.pulled.Load()}
	p.mu.Lock()
	s.Nodes, s.Boxed = len(p.nodes), p.boxed
	for _, n := range p.nodes {
		if now-n.firstSeen >= max(p.o.MinAge, 0) {
			s.Eligible++
		}
	}
	p.mu.Unlock()
	return s
}

// Placement reports mailbox placement's counters.
func (d *Daemon) Placement() PlacementStats { return d.place.stats() }

// mailboxes serves place and pull on one link; in is the inbound dialled
// link's rate bucket, nil on a neighbour's link (the engine's budget).
type mailboxes struct {
	d  *Daemon
	in *inDialled
}

var _ wire.Mailboxes = mailboxes{}

// Place stores DMs placed on this node, held, and indexes them for pulls.
func (m mailboxes) Place(from identity.Fingerprint, envs []gossip.Envelope) (int, error) {
	if m.in != nil {
		if n, _ := m.in.take(len(envs)); n < len(envs) {
			return 0, relay.ErrRateLimited
		}
	}
	added, err := m.d.eng.AcceptPlaced(from, envs)
	if err != nil && !errors.Is(err, relay.ErrRateLimited) {
		return 0, err
	}
	p := m.d.place
	for _, env := range envs {
		if env.Kind != schemas.Envelope_Kind_dm || !m.d.eng.Held(env.ID) {
			continue
		}
		if !p.box(p.bucket(env.Destination), env.ID) {
			m.d.eng.Release(env.ID) // index full: flooded instead
		}
	}
	return added, err
}

// Pull answers one page of a bucket from the DMs placed here.
func (m mailboxes) Pull(from identity.Fingerprint, req wire.PullRequest) ([]gossip.Envelope, *gossip.ID, error) {
	p := m.d.place
	if int(req.Bits) != p.o.BucketBits {
		return nil, nil, fmt.Errorf("buckets of %d bits asked, this node places with %d", req.Bits, p.o.BucketBits)
	}
	if m.in != nil {
		if n, _ := m.in.take(1); n == 0 {
			return nil, nil, relay.ErrRateLimited
		}
	}
	p.mu.Lock()
	ids := make([]gossip.ID, 0, len(p.boxes[req.Bucket]))
	for id := range p.boxes[req.Bucket] {
		if req.After == nil || string(id[:]) > string(req.After[:]) {
			ids = append(ids, id)
		}
	}
	p.mu.Unlock()
	slices.SortFunc(ids, func(a, b gossip.ID) int { return strings.Compare(string(a[:]), string(b[:])) })
	var out []gossip.Envelope
	size := 0
	for _, id := range ids {
		if len(out) == req.Limit || (len(out) > 0 && size >= wire.MaxPullBytes) {
			last := out[len(out)-1].ID
			return out, &last, nil
		}
		env, ok, err := m.d.st.Get(id)
		if err != nil {
			return nil, nil, err
		}
		if !ok {
			p.unbox(req.Bucket, id)
			continue
		}
		if size+len(env.Payload) > wire.MaxPullBytes && len(out) > 0 {
			last := out[len(out)-1].ID
			return out, &last, nil
		}
		out = append(out, env)
		size += len(env.Payload)
	}
	return out, nil, nil
}

// errNoDial is a call to a node that is not a neighbour while decoys are on.
var errNoDial = errors.New("not a neighbour, and with decoys on this node does not dial (the dial would show when a message moved)")

// callTo calls fp over the neighbour link to it if there is one, else
// over a dialled link (dialled.go) to addrs. With decoys on it does not
// dial: the dial would show when a message moved (errNoDial; placement
// then floods, in the links' cells).
func (d *Daemon) callTo(ctx context.Context, fp identity.Fingerprint, addrs []string, call func(context.Context, wire.Peer) error) error {
	if fp.Equal(d.id.Fingerprint()) {
		return errors.New("call to self: not a remote node")
	}
	ctx, cancel := d.pushContext(ctx)
	defer cancel()
	if l := d.linkTo(fp); l != nil {
		if err := call(ctx, d.peerOf(l)); err != nil {
			return fmt.Errorf("neighbour %s: %w", fp, err)
		}
		return nil
	}
	if d.cfg.DecoyRate >= minStreamRate {
		return fmt.Errorf("%s: %w", fp, errNoDial)
	}
	for attempt := 0; ; attempt++ {
		e, reused, err := d.dialled.acquire(ctx, d, fp, addrs)
		if err != nil {
			return err
		}
		err = call(ctx, wire.NewPeer(e.l.Remote(), e.l.Version()))
		d.dialled.release(e)
		if err == nil {
			return nil
		}
		if reused && attempt == 0 && ended(e.l) && ctx.Err() == nil {
			continue // closed by the other side as we reused it: dial once more
		}
		return fmt.Errorf("%s over a dialled link: %w", fp, err)
	}
}

// MailboxNodes returns the nodes this node would place user's DMs on now,
// by its own view (status and tests).
func (d *Daemon) MailboxNodes(user identity.Fingerprint) []identity.Fingerprint {
	var out []identity.Fingerprint
	for _, t := range d.place.targets(placement.Bucket(user, d.place.o.BucketBits)) {
		out = append(out, t.fp)
	}
	return out
}

// HasEnvelope reports whether envelope id is stored here (tests, and
// tools that ask where a message is).
func (d *Daemon) HasEnvelope(id gossip.ID) (bool, error) {
	_, ok, err := d.st.Get(id)
	return ok, err
}
