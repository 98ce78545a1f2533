package placement

// A discrete-event simulation of DM delivery on a city-like mesh, comparing
// today's flooding with mailbox placement (issue 12, items 5 and 7). It runs
// in virtual time and counts link transmissions and stored copies; it does
// not model latency below an hour's tick, bandwidth or envelope sizes.
//
// Model, chosen to be simple and stated:
//   - Graph: nodes uniform in a unit square, linked when closer than a
//     radius solved for the wanted mean degree; only the giant component is
//     kept. A link here is a radio/IP adjacency; unicast between any two up
//     nodes takes the shortest path through up nodes (the mesh's IP routing
//     routes around nodes that are down), one transmission per hop.
//   - Churn: every node alternates up and down independently, with
//     exponential up and down times (mean down meanDown, mean up chosen so a
//     fraction downFrac is down at any time), starting in the stationary
//     state. A node that is down keeps its store (persistent or a short
//     outage); it neither relays nor answers.
//   - Users: each lives at a random home node and alternates online and
//     offline (exponential); a fraction also has one long offline stint. The
//     client talks to its home node only, and only while both are up.
//   - DMs: a random online sender hands each to its home node; the DM counts
//     as delivered when the recipient's client has it within the TTL.
//   - Flooding: a node that gets an envelope pushes it to every up neighbour
//     that it did not get it from and that did not hold it already (pushes
//     that cross in flight are both counted); a node that comes up exchanges
//     what it lacks with its up neighbours (one transmission per envelope).
//     The hop limit caps forwards. The receipt floods the same way and
//     deletes every copy it reaches; nodes keep it as a tombstone.
//   - Placement: the sender's node unicasts the DM to the K placement nodes
//     of the recipient's bucket in its own view and keeps its own copy until
//     the receipt (for the fallback); when none is reachable it retries each
//     hour. Every node watches the buckets of the users registered with it
//     (online or not): it pulls each from the K nodes of its own view
//     (K+PullExtra) every Renew, a request and a reply per node, and a
//     placement node pushes a newly stored DM to the watchers of its bucket
//     at once (retrying hourly those it cannot reach). A pull or push carries
//     the whole bucket, not one user's DMs, so every watcher of a bucket
//     fetches every DM of it; only the recipient's node keeps it, until its
//     client connects. On delivery the recipient's node sends the receipt to
//     the placement nodes of its view (each deletes its copy; those down get
//     it when back), and the first of them that held the DM forwards the
//     receipt to the node the DM came from: the sender's node, whose address
//     it saw when the DM arrived. Nothing names the router a user sits at.
//   - Fallback: after FetchCheck without a receipt the sender's node asks
//     the nodes it placed at whether a watcher fetched the DM (one that has
//     the receipt answers with it; a hostile one says yes); if none did, or
//     none was ever reachable, or Timeout passes without a receipt, it
//     floods the DM as today, and the receipt then floods too.
//   - Placement nodes re-drawn by a generation flip hand their copies to the
//     new K of their view (counted as handover).
//   - Hostile nodes accept what they are given and drop it: in flooding they
//     forward nothing, in placement they store nothing and answer no pull.

import (
	"container/heap"
	"math/bits"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/quicproquo/qpq/mesh/identity"
)

type simConfig struct {
	Nodes       int
	MeanDegree  float64
	Users       int
	DMs         int
	SendWindow  time.Duration // DMs are sent in [0, SendWindow)
	TTL         time.Duration
	HopLimit    int
	DownFrac    float64
	MeanDown    time.Duration
	UserOn      time.Duration // mean online session
	UserOff     time.Duration // mean offline gap
	LongOffFrac float64       // users with one long offline stint
	LongOffMax  time.Duration // its length is uniform in [1 day, LongOffMax]
	ViewFrac    float64       // share of descriptors each node knows
	HostileFrac float64
	FetchCheck  time.Duration // sender asks its placement nodes whether the DM was fetched
	Timeout     time.Duration // sender floods when no receipt by then
	Renew       time.Duration // a watching node re-pulls (renews its watch) this often
	PullExtra   int           // a puller asks K+PullExtra nodes of its view
	Opts        Options
	Seed        uint64
}

func defaultSimConfig() simConfig {
	return simConfig{
		Nodes: 500, MeanDegree: 9, Users: 1000, DMs: 5000,
		SendWindow: 24 * time.Hour, TTL: 7 * 24 * time.Hour, HopLimit: 16,
		DownFrac: 0.1, MeanDown: 2 * time.Hour,
		UserOn: 3 * time.Hour, UserOff: 5 * time.Hour, LongOffFrac: 0.1, LongOffMax: 4 * 24 * time.Hour,
		ViewFrac: 1, FetchCheck: 24 * time.Hour, Timeout: 5 * 24 * time.Hour, Renew: 24 * time.Hour,
		Seed: 1,
	}
}

const tick = time.Hour

// simResult holds the figures of one run.
type simResult struct {
	Nodes, Edges, Diameter   int
	MeanDegree               float64
	DMs, Delivered, Fallback int
	// Transmissions by purpose, summed over all DMs.
	TxFlood, TxPlace, TxFetch, TxPullCtl, TxReceipt, TxHandover, TxFallback, TxPoll int
	// TxPullCtlAll is every pull's control cost over the whole run;
	// TxPullCtl only what fell in the send window (see pull).
	TxPullCtlAll int
	// Why fallbacks happened: no placement node reachable at send, no
	// fetch reported at FetchCheck, no receipt by Timeout.
	FbUnreachable, FbNotFetched, FbTimeout int
	RunDays                                float64
	Copies                                 int
	PathSum, PathN                         int
}

func (r simResult) tx() int {
	return r.TxFlood + r.TxPlace + r.TxFetch + r.TxPullCtl + r.TxReceipt + r.TxHandover + r.TxFallback + r.TxPoll
}
func (r simResult) perDM(v int) float64 { return float64(v) / float64(max(r.DMs, 1)) }
func (r simResult) deliveryRatio() float64 {
	return float64(r.Delivered) / float64(max(r.DMs, 1))
}
func (r simResult) meanPath() float64 { return float64(r.PathSum) / float64(max(r.PathN, 1)) }

// graph is the giant component of a random geometric graph.
type graph struct {
	adj      [][]int32
	edges    int
	diameter int
}

func newGraph(r *rand.Rand, n int, meanDegree float64) graph {
	xs, ys := make([]float64, n), make([]float64, n)
	for i := range n {
		xs[i], ys[i] = r.Float64(), r.Float64()
	}
	degree := func(rad float64) float64 {
		e := 0
		for i := range n {
			for j := i + 1; j < n; j++ {
				if dx, dy := xs[i]-xs[j], ys[i]-ys[j]; dx*dx+dy*dy < rad*rad {
					e++
				}
			}
		}
		return 2 * float64(e) / float64(n)
	}
	// Border effects lower the degree below n*pi*r^2, so solve for r.
	lo, hi := 0.0, 1.0
	for range 40 {
		mid := (lo + hi) / 2
		if degree(mid) < meanDegree {
			lo = mid
		} else {
			hi = mid
		}
	}
	rad := hi
	adj := make([][]int32, n)
	for i := range n {
		for j := i + 1; j < n; j++ {
			if dx, dy := xs[i]-xs[j], ys[i]-ys[j]; dx*dx+dy*dy < rad*rad {
				adj[i] = append(adj[i], int32(j))
				adj[j] = append(adj[j], int32(i))
			}
		}
	}
	// Keep the giant component, renumbered.
	comp := make([]int, n)
	for i := range comp {
		comp[i] = -1
	}
	bestComp, bestSize := 0, 0
	for s := range n {
		if comp[s] >= 0 {
			continue
		}
		size, q := 0, []int32{int32(s)}
		comp[s] = s
		for len(q) > 0 {
			v := q[0]
			q = q[1:]
			size++
			for _, w := range adj[v] {
				if comp[w] < 0 {
					comp[w] = s
					q = append(q, w)
				}
			}
		}
		if size > bestSize {
			bestComp, bestSize = s, size
		}
	}
	idx := make([]int32, n)
	m := int32(0)
	for i := range n {
		idx[i] = -1
		if comp[i] == bestComp {
			idx[i] = m
			m++
		}
	}
	g := graph{adj: make([][]int32, m)}
	for i := range n {
		if idx[i] < 0 {
			continue
		}
		for _, j := range adj[i] {
			g.adj[idx[i]] = append(g.adj[idx[i]], idx[j])
		}
		g.edges += len(adj[i])
	}
	g.edges /= 2
	all := make([]bool, m)
	for i := range all {
		all[i] = true
	}
	for s := range m {
		for _, d := range bfs(g.adj, all, s) {
			g.diameter = max(g.diameter, int(d))
		}
	}
	return g
}

// bfs returns hop distances from s through up nodes; -1 for unreachable.
func bfs(adj [][]int32, up []bool, s int32) []int16 {
	dist := make([]int16, len(adj))
	for i := range dist {
		dist[i] = -1
	}
	if !up[s] {
		return dist
	}
	dist[s] = 0
	q := []int32{s}
	for len(q) > 0 {
		v := q[0]
		q = q[1:]
		for _, w := range adj[v] {
			if up[w] && dist[w] < 0 {
				dist[w] = dist[v] + 1
				q = append(q, w)
			}
		}
	}
	return dist
}

// intervals is a sorted list of toggle times; the state starts at start.
type schedule struct {
	start   bool
	toggles []time.Duration
}

func (s schedule) at(t time.Duration) bool {
	n, _ := slices.BinarySearch(s.toggles, t+1)
	return s.start != (n%2 == 1)
}

func expDur(r *rand.Rand, mean time.Duration) time.Duration {
	return time.Duration(r.ExpFloat64() * float64(mean))
}

// alternating makes an on/off schedule over [0, end) in its stationary
// state: on with probability meanOn/(meanOn+meanOff) at 0.
func alternating(r *rand.Rand, meanOn, meanOff, end time.Duration) schedule {
	on := r.Float64() < float64(meanOn)/float64(meanOn+meanOff)
	s := schedule{start: on}
	t, cur := time.Duration(0), on
	for {
		mean := meanOff
		if cur {
			mean = meanOn
		}
		t += expDur(r, mean) + time.Second
		if t >= end {
			return s
		}
		s.toggles = append(s.toggles, t)
		cur = !cur
	}
}

// forceOff returns s with [from, to) off.
func (s schedule) forceOff(from, to time.Duration) schedule {
	out := schedule{start: s.start && from > 0}
	state := out.start
	add := func(t time.Duration, want bool) {
		if want != state {
			out.toggles = append(out.toggles, t)
			state = want
		}
	}
	if from == 0 {
		state = false
	}
	events := append([]time.Duration{from, to}, s.toggles...)
	slices.Sort(events)
	for _, t := range slices.Compact(events) {
		want := s.at(t)
		if t >= from && t < to {
			want = false
		}
		if t > 0 {
			add(t, want)
		}
	}
	return out
}

type evKind uint8

const (
	evNode evKind = iota
	evUser
	evSend
	evTimeout
	evFetchCheck
	evTick
)

type event struct {
	at   time.Duration
	kind evKind
	id   int
}

type evHeap []event

func (h evHeap) Len() int { return len(h) }
func (h evHeap) Less(i, j int) bool {
	if h[i].at != h[j].at {
		return h[i].at < h[j].at
	}
	return h[i].kind < h[j].kind
}
func (h evHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *evHeap) Push(x any)   { *h = append(*h, x.(event)) }
func (h *evHeap) Pop() any {
	old := *h
	e := old[len(old)-1]
	*h = old[:len(old)-1]
	return e
}

// Flood state bits per node.
const (
	fHeld    = 1 << iota // holds the DM
	fReceipt             // holds the receipt (and so refuses the DM)
	fDropped             // hostile node that took the DM and dropped it
	fEver                // stored the DM at some time
)

type flood struct {
	st    []uint8
	dmHop []uint8
	rcHop []uint8
}

type dm struct {
	idx     int
	s, h    int32 // sender's and recipient's home nodes
	u       int32 // recipient user
	b       uint32
	sent    time.Duration
	expired bool

	// placement mode
	placedAt     []int32 // nodes that accepted it from the sender
	fetchedFrom  []int32 // placement nodes a watcher fetched it from
	holders      []int32 // honest placement nodes holding a copy
	everStored   []int32 // nodes that stored a copy outside the flood state
	fetched      []int32 // watchers that have fetched it
	atHome       bool
	rcFwd        int32 // placement node forwarding the receipt to s, or -1
	rcSender     bool
	fallback     bool
	fbPending    bool    // fallback due but the sender's node is down
	checkPending bool    // FetchCheck reached none of them yet
	rcAt         []int32 // placement nodes that got the receipt

	delivered bool
	rcMade    bool
	fl        *flood
}

type sim struct {
	cfg   simConfig
	opts  Options
	flood bool // mode: flooding only
	// dropPlaced makes every placement node drop what it is given (tests
	// the fallback alone, with floods still relayed).
	dropPlaced bool
	g          graph
	n          int

	nodeSched []schedule
	userSched []schedule
	up        []bool
	upVer     int
	online    []bool
	hostile   []bool

	home        []int32
	bucket      []uint32
	bucketUsers map[uint32][]int32
	dmsTo       [][]*dm
	bucketDMs   map[uint32][]*dm
	dms         []*dm
	sendAt      []time.Duration
	sendFrom    []int32
	sendTo      []int32

	fps       []identity.Fingerprint
	fpIndex   map[identity.Fingerprint]int32
	firstSeen []time.Duration
	gen0      []uint64
	views     [][]int32 // candidate node ids per view; one shared when ViewFrac is 1
	viewOf    []int
	viewCands [][]Candidate
	scores    map[uint32][]uint64 // bucket -> [node*2 + gen-gen0]
	placeC    map[[2]int64]placed
	flipAt    []time.Duration // sorted times a candidate's generation changes
	flipVer   int

	distC     map[int32]distEntry
	lastPull  map[[2]int64]time.Duration
	lastTick  time.Duration
	now       time.Duration
	end       time.Duration
	res       simResult
	scratch   []int32
	levelMark []int64
	// heldBits and rcBits mirror the flood state per node, one bit per DM,
	// so a node coming up finds the DMs it disagrees on with a neighbour
	// without touching every DM.
	heldBits, rcBits [][]uint64
	stamp            int64
}

type placed struct {
	ver   int
	nodes []int32
}

type distEntry struct {
	ver  int
	dist []int16
}

func newSim(cfg simConfig, floodMode bool) *sim {
	r := rand.New(rand.NewPCG(cfg.Seed, 0x9e3779b97f4a7c15))
	s := &sim{cfg: cfg, opts: cfg.Opts.WithDefaults(), flood: floodMode}
	s.g = newGraph(r, cfg.Nodes, cfg.MeanDegree)
	s.n = len(s.g.adj)
	s.end = cfg.SendWindow + cfg.TTL
	s.res.Nodes, s.res.Edges, s.res.Diameter = s.n, s.g.edges, s.g.diameter
	s.res.MeanDegree = 2 * float64(s.g.edges) / float64(s.n)

	meanUp := time.Duration(float64(cfg.MeanDown) * (1 - cfg.DownFrac) / cfg.DownFrac)
	s.nodeSched = make([]schedule, s.n)
	s.up = make([]bool, s.n)
	s.hostile = make([]bool, s.n)
	s.fps = make([]identity.Fingerprint, s.n)
	s.fpIndex = make(map[identity.Fingerprint]int32, s.n)
	s.firstSeen = make([]time.Duration, s.n)
	s.gen0 = make([]uint64, s.n)
	for i := range s.n {
		s.nodeSched[i] = alternating(r, meanUp, cfg.MeanDown, s.end)
		s.up[i] = s.nodeSched[i].start
		s.hostile[i] = r.Float64() < cfg.HostileFrac
		for j := range s.fps[i] {
			s.fps[i][j] = byte(r.UintN(256))
		}
		s.fpIndex[s.fps[i]] = int32(i)
		// Every node has been known mesh-wide for 2 to 120 days: the mesh
		// is established; a new node would take no slot for MinAge.
		s.firstSeen[i] = -s.opts.MinAge - 2*24*time.Hour - time.Duration(r.Int64N(int64(118*24*time.Hour)))
		g, _ := Generation(Candidate{s.fps[i], s.firstSeen[i]}, 0, s.opts)
		s.gen0[i] = g
		if s.opts.Rotation > 0 {
			// The next flip within the run (Rotation exceeds the run, so at most one).
			next := s.firstSeen[i] + s.opts.MinAge + time.Duration(g+1)*s.opts.Rotation
			if next < s.end {
				s.flipAt = append(s.flipAt, next)
			}
		}
	}
	slices.Sort(s.flipAt)

	// Views: who knows which descriptors (a node always knows itself).
	s.viewOf = make([]int, s.n)
	if cfg.ViewFrac >= 1 {
		all := make([]int32, s.n)
		for i := range all {
			all[i] = int32(i)
		}
		s.views = [][]int32{all}
	} else {
		for i := range s.n {
			var v []int32
			for j := range s.n {
				if j == i || r.Float64() < cfg.ViewFrac {
					v = append(v, int32(j))
				}
			}
			s.views = append(s.views, v)
			s.viewOf[i] = i
		}
	}
	for _, v := range s.views {
		c := make([]Candidate, len(v))
		for i, id := range v {
			c[i] = Candidate{s.fps[id], s.firstSeen[id]}
		}
		s.viewCands = append(s.viewCands, c)
	}
	s.scores = map[uint32][]uint64{}
	s.placeC = map[[2]int64]placed{}
	s.distC = map[int32]distEntry{}
	s.lastPull = map[[2]int64]time.Duration{}

	// Users.
	s.userSched = make([]schedule, cfg.Users)
	s.online = make([]bool, cfg.Users)
	s.home = make([]int32, cfg.Users)
	s.bucket = make([]uint32, cfg.Users)
	s.bucketUsers = map[uint32][]int32{}
	s.dmsTo = make([][]*dm, cfg.Users)
	for u := range cfg.Users {
		s.home[u] = int32(r.IntN(s.n))
		var fp identity.Fingerprint
		for j := range fp {
			fp[j] = byte(r.UintN(256))
		}
		s.bucket[u] = Bucket(fp, s.opts.BucketBits)
		s.bucketUsers[s.bucket[u]] = append(s.bucketUsers[s.bucket[u]], int32(u))
		sc := alternating(r, cfg.UserOn, cfg.UserOff, s.end)
		if r.Float64() < cfg.LongOffFrac {
			from := time.Duration(r.Int64N(int64(cfg.SendWindow + cfg.TTL/2)))
			long := 24*time.Hour + time.Duration(r.Int64N(int64(cfg.LongOffMax-24*time.Hour)))
			sc = sc.forceOff(from, from+long)
		}
		s.userSched[u] = sc
		s.online[u] = sc.start
	}
	// DMs: a random sender, sent at the first moment from a random time on
	// when the sender is online and its node up.
	s.bucketDMs = map[uint32][]*dm{}
	for len(s.sendAt) < cfg.DMs {
		from, to := int32(r.IntN(cfg.Users)), int32(r.IntN(cfg.Users))
		if from == to {
			continue
		}
		t := time.Duration(r.Int64N(int64(cfg.SendWindow)))
		for t < cfg.SendWindow && !(s.userSched[from].at(t) && s.nodeSched[s.home[from]].at(t)) {
			t += 10 * time.Minute
		}
		if t >= cfg.SendWindow {
			continue
		}
		s.sendAt = append(s.sendAt, t)
		s.sendFrom = append(s.sendFrom, from)
		s.sendTo = append(s.sendTo, to)
	}
	s.levelMark = make([]int64, s.n)
	s.dms = make([]*dm, len(s.sendAt))
	words := (len(s.sendAt) + 63) / 64
	s.heldBits, s.rcBits = make([][]uint64, s.n), make([][]uint64, s.n)
	for i := range s.n {
		s.heldBits[i], s.rcBits[i] = make([]uint64, words), make([]uint64, words)
	}
	return s
}

func (s *sim) dist(a, b int32) int {
	if !s.up[a] || !s.up[b] {
		return -1
	}
	if a == b {
		return 0
	}
	e, ok := s.distC[a]
	if !ok || e.ver != s.upVer {
		e = distEntry{s.upVer, bfs(s.g.adj, s.up, a)}
		s.distC[a] = e
	}
	return int(e.dist[b])
}

// place is Place over the view of node obs, with memoised scores; k nodes.
func (s *sim) place(obs int32, b uint32, k int) []int32 {
	v := s.viewOf[obs]
	key := [2]int64{int64(v)<<8 | int64(k), int64(b)}
	if c, ok := s.placeC[key]; ok && c.ver == s.flipVer {
		return c.nodes
	}
	sc, ok := s.scores[b]
	if !ok {
		sc = make([]uint64, 2*s.n)
		for i := range s.n {
			for d := range uint64(2) {
				sc[2*i+int(d)] = Score(b, s.opts.BucketBits, s.fps[i], s.gen0[i]+d)
			}
		}
		s.scores[b] = sc
	}
	ids := s.views[v]
	o := s.opts
	o.K = k
	fps := place(s.viewCands[v], s.now, o, func(i int, _ identity.Fingerprint, gen uint64) uint64 {
		id := ids[i]
		if d := gen - s.gen0[id]; d <= 1 {
			return sc[2*int(id)+int(d)]
		}
		return Score(b, s.opts.BucketBits, s.fps[id], gen)
	})
	nodes := make([]int32, len(fps))
	for i, fp := range fps {
		nodes[i] = s.fpIndex[fp]
	}
	s.placeC[key] = placed{s.flipVer, nodes}
	return nodes
}

func (s *sim) run() simResult {
	h := &evHeap{}
	for i, sc := range s.nodeSched {
		for _, t := range sc.toggles {
			*h = append(*h, event{t, evNode, i})
		}
	}
	for u, sc := range s.userSched {
		for _, t := range sc.toggles {
			*h = append(*h, event{t, evUser, u})
		}
	}
	for i, t := range s.sendAt {
		*h = append(*h, event{t, evSend, i})
		if !s.flood {
			*h = append(*h, event{t + s.cfg.Timeout, evTimeout, i})
			*h = append(*h, event{t + s.cfg.FetchCheck, evFetchCheck, i})
		}
	}
	for t := tick; t < s.end; t += tick {
		*h = append(*h, event{t, evTick, 0})
	}
	heap.Init(h)
	for h.Len() > 0 {
		e := heap.Pop(h).(event)
		if e.at >= s.end {
			break
		}
		s.now = e.at
		for s.flipVer < len(s.flipAt) && s.flipAt[s.flipVer] <= s.now {
			s.flipVer++
		}
		switch e.kind {
		case evNode:
			s.nodeToggle(int32(e.id))
		case evUser:
			s.userToggle(int32(e.id))
		case evSend:
			s.send(e.id)
		case evTimeout:
			d := s.dms[e.id]
			if !d.rcSender && !d.fallback && !d.expired {
				s.res.FbTimeout++
				s.startFallback(d)
			}
		case evFetchCheck:
			s.fetchCheck(s.dms[e.id])
		case evTick:
			s.tick()
		}
	}
	s.res.DMs = len(s.dms)
	s.res.RunDays = float64(s.end) / float64(24*time.Hour)
	for _, d := range s.dms {
		if d.delivered {
			s.res.Delivered++
		}
		if d.fallback {
			s.res.Fallback++
		}
		s.res.Copies += s.copies(d)
	}
	return s.res
}

func (s *sim) copies(d *dm) int {
	n := 0
	if d.fl != nil {
		for i, st := range d.fl.st {
			if st&fEver != 0 || (st&fHeld != 0) {
				n++
			} else if slices.Contains(d.everStored, int32(i)) {
				n++
			}
		}
		return n
	}
	return len(d.everStored)
}

func addOnce(l []int32, v int32) []int32 {
	if slices.Contains(l, v) {
		return l
	}
	return append(l, v)
}

func (s *sim) send(i int) {
	d := &dm{idx: i, s: s.home[s.sendFrom[i]], u: s.sendTo[i], h: s.home[s.sendTo[i]], b: s.bucket[s.sendTo[i]], sent: s.now, rcFwd: -1}
	s.dms[i] = d
	s.dmsTo[d.u] = append(s.dmsTo[d.u], d)
	s.bucketDMs[d.b] = append(s.bucketDMs[d.b], d)
	if s.flood {
		s.startFlood(d, false)
		return
	}
	d.everStored = addOnce(d.everStored, d.s) // kept until the receipt, for the fallback
	if d.s == d.h {
		d.atHome = true
	}
	s.placeDM(d)
	s.tryDeliver(d)
}

// placeDM sends d from the sender's node to the placement nodes of its
// view that it has not reached yet and can reach now. The tick calls it
// again until the receipt, so nodes that were down, and nodes that enter the
// view's K after a generation flip, get it too. If none was reached by
// FetchCheck the sender floods: in a partition the DM waits for the mesh to
// heal instead of flooding the fragment and then everything.
func (s *sim) placeDM(d *dm) {
	for _, p := range s.place(d.s, d.b, s.opts.K) {
		if slices.Contains(d.placedAt, p) {
			continue
		}
		hops := s.dist(d.s, p)
		if hops < 0 {
			continue
		}
		s.res.TxPlace += hops
		s.res.PathSum += hops
		s.res.PathN++
		d.placedAt = append(d.placedAt, p)
		if s.hostile[p] || s.dropPlaced {
			continue
		}
		d.holders = addOnce(d.holders, p)
		d.everStored = addOnce(d.everStored, p)
		s.pushToWatchers(d, p)
	}
}

// watchers returns the nodes watching bucket b now: the up home nodes of
// its users. A node watches the buckets of every user registered with it,
// online or not, and keeps what it fetches for its own users until their
// clients connect, so a watch does not follow a user's sessions.
func (s *sim) watchers(b uint32) []int32 {
	s.scratch = s.scratch[:0]
	for _, u := range s.bucketUsers[b] {
		if s.up[s.home[u]] {
			s.scratch = addOnce(s.scratch, s.home[u])
		}
	}
	return s.scratch
}

// gotAt records that node w fetched d; its home keeps the copy.
func (s *sim) gotAt(d *dm, w int32) {
	d.fetched = append(d.fetched, w)
	if w == d.h && !d.atHome && !d.delivered {
		d.atHome = true
		d.everStored = addOnce(d.everStored, w)
		s.tryDeliver(d)
	}
}

// fetchFrom moves d to watcher w from the nearest honest up holder in w's
// pull set, if any; it reports whether it did.
func (s *sim) fetchFrom(d *dm, w int32) bool {
	if d.expired || d.delivered || slices.Contains(d.fetched, w) {
		return false
	}
	best, from := -1, int32(-1)
	for _, p := range s.place(w, d.b, s.opts.K+s.cfg.PullExtra) {
		if !slices.Contains(d.holders, p) {
			continue
		}
		if hops := s.dist(p, w); hops >= 0 && (best < 0 || hops < best) {
			best, from = hops, p
		}
	}
	if best < 0 {
		return false
	}
	d.fetchedFrom = addOnce(d.fetchedFrom, from)
	s.res.TxFetch += best
	s.gotAt(d, w)
	return true
}

// pushToWatchers: a placement node that stores a DM pushes it to the nodes
// watching its bucket there.
func (s *sim) pushToWatchers(d *dm, p int32) {
	for _, w := range slices.Clone(s.watchers(d.b)) {
		if slices.Contains(s.place(w, d.b, s.opts.K+s.cfg.PullExtra), p) {
			s.fetchFrom(d, w)
		}
	}
}

// pull is a watcher's request to its pull set, which also renews its watch
// there: a request and a reply per node (each hop counted), then every
// envelope of the bucket it lacks. Its control cost is a cost per hour, not
// per DM: the run sends DMs only in its first SendWindow and then waits a
// TTL for the last of them, so TxPullCtl counts the control cost within the
// send window, which is what a mesh sending DMs at this rate all the time
// would pay per DM (TxPullCtlAll has the whole run).
func (s *sim) pull(w int32, b uint32) {
	s.lastPull[[2]int64{int64(w), int64(b)}] = s.now
	for _, p := range s.place(w, b, s.opts.K+s.cfg.PullExtra) {
		if hops := s.dist(w, p); hops > 0 {
			s.res.TxPullCtlAll += 2 * hops
			if s.now < s.cfg.SendWindow {
				s.res.TxPullCtl += 2 * hops
			}
		}
	}
	for _, d := range s.bucketDMs[b] {
		if d == nil {
			continue
		}
		if d.fl == nil || d.fl.st[w]&fHeld == 0 {
			s.fetchFrom(d, w)
		}
	}
}

func (s *sim) tryDeliver(d *dm) {
	if d.delivered || d.expired || !s.online[d.u] || !s.up[d.h] {
		return
	}
	if !d.atHome && !(d.fl != nil && d.fl.st[d.h]&fHeld != 0) {
		return
	}
	d.delivered = true
	d.rcMade = true
	d.atHome = false
	if d.fl != nil {
		s.floodReceiptFrom(d, d.h)
	}
	if s.flood {
		return
	}
	// Receipt to the placement nodes of the recipient's view (deletes their
	// copies); the first that held the DM forwards it to the node the DM
	// entered at, which is how the sender's side learns of delivery.
	for _, p := range s.place(d.h, d.b, s.opts.K+s.cfg.PullExtra) {
		hops := s.dist(d.h, p)
		if hops < 0 {
			continue
		}
		s.res.TxReceipt += hops
		if i := slices.Index(d.holders, p); i >= 0 {
			d.holders = slices.Delete(d.holders, i, i+1)
			d.rcAt = append(d.rcAt, p)
			if d.rcFwd < 0 {
				d.rcFwd = p
			}
		}
	}
	s.forwardReceipt(d)
}

func (s *sim) forwardReceipt(d *dm) {
	if d.rcSender || d.rcFwd < 0 {
		return
	}
	if hops := s.dist(d.rcFwd, d.s); hops >= 0 {
		s.res.TxReceipt += hops
		d.rcSender = true
	}
}

func (s *sim) startFallback(d *dm) {
	d.fallback = true
	if !s.up[d.s] {
		d.fbPending = true
		return
	}
	d.fbPending = false
	s.startFlood(d, true)
	if d.rcMade {
		// Delivered, but the receipt did not reach the sender in time: the
		// recipient's node refuses the flood and answers with the receipt,
		// which floods back.
		s.floodReceiptFrom(d, d.h)
	}
}

func (s *sim) startFlood(d *dm, fallback bool) {
	d.fl = &flood{st: make([]uint8, s.n), dmHop: make([]uint8, s.n), rcHop: make([]uint8, s.n)}
	if d.rcMade {
		s.setSt(d, d.h, fReceipt)
		d.fl.rcHop[d.h] = uint8(s.cfg.HopLimit)
	}
	s.setSt(d, d.s, d.fl.st[d.s]|fHeld|fEver)
	d.fl.dmHop[d.s] = uint8(s.cfg.HopLimit)
	s.spread(d, []int32{d.s}, false, fallback)
}

// setSt writes node w's flood state for d and mirrors it in the bitsets.
func (s *sim) setSt(d *dm, w int32, st uint8) {
	d.fl.st[w] = st
	word, bit := d.idx/64, uint64(1)<<(d.idx%64)
	s.heldBits[w][word] &^= bit
	s.rcBits[w][word] &^= bit
	if st&fHeld != 0 {
		s.heldBits[w][word] |= bit
	}
	if st&fReceipt != 0 {
		s.rcBits[w][word] |= bit
	}
}

func (s *sim) floodReceiptFrom(d *dm, x int32) {
	f := d.fl
	s.setSt(d, x, f.st[x]&^fHeld|fReceipt)
	f.rcHop[x] = uint8(s.cfg.HopLimit)
	if s.up[x] {
		s.spread(d, []int32{x}, true, d.fallback)
	}
}

// spread floods the DM (or its receipt) from sources, level by level. A
// node pushes to each up neighbour that did not hold it before this level
// began; a push to a neighbour that got it in the same level is counted
// too (pushes cross in flight).
func (s *sim) spread(d *dm, sources []int32, receipt, fallback bool) {
	f := d.fl
	bit := uint8(fHeld)
	hop := f.dmHop
	if receipt {
		bit, hop = fReceipt, f.rcHop
	}
	s.stamp++
	base := s.stamp
	for _, v := range sources {
		s.levelMark[v] = base
	}
	tx := 0
	var rcSources []int32
	frontier := sources
	level := int64(0)
	for ; len(frontier) > 0; level++ {
		var next []int32
		for _, v := range frontier {
			if !s.up[v] || hop[v] == 0 || s.hostile[v] {
				continue
			}
			for _, w := range s.g.adj[v] {
				if !s.up[w] {
					continue
				}
				mark := s.levelMark[w] - base
				if f.st[w]&bit != 0 || (!receipt && f.st[w]&fDropped != 0) {
					if s.levelMark[w] >= base && mark >= level {
						tx++ // crossed in flight with w's own push, or a second parent
					}
					continue
				}
				if !receipt && f.st[w]&fReceipt != 0 {
					// w holds the receipt: it answers with it.
					rcSources = append(rcSources, w)
					continue
				}
				tx++
				s.levelMark[w] = base + level + 1
				if receipt {
					s.setSt(d, w, f.st[w]&^fHeld|fReceipt)
					f.rcHop[w] = hop[v] - 1
					if i := slices.Index(d.holders, w); i >= 0 {
						d.holders = slices.Delete(d.holders, i, i+1)
					}
				} else if s.hostile[w] {
					s.setSt(d, w, f.st[w]|fDropped)
				} else {
					s.setSt(d, w, f.st[w]|fHeld|fEver)
					f.dmHop[w] = hop[v] - 1
				}
				next = append(next, w)
			}
		}
		frontier = next
	}
	s.stamp = base + level + 2
	if fallback {
		s.res.TxFallback += tx
	} else {
		s.res.TxFlood += tx
	}
	if f.st[d.s]&fReceipt != 0 {
		d.rcSender = true
	}
	if f.st[d.h]&fHeld != 0 {
		s.tryDeliver(d)
	}
	if len(rcSources) > 0 {
		s.spread(d, rcSources, true, fallback)
	}
}

// syncNode is anti-entropy for a node that came up: it takes what an up
// neighbour holds and it lacks, then pushes on what it holds.
func (s *sim) syncNode(d *dm, x int32) {
	f := d.fl
	// Fast path: x and its up neighbours agree, so a summary exchange moves
	// nothing.
	const mask = fHeld | fReceipt
	differ := false
	for _, w := range s.g.adj[x] {
		if s.up[w] && f.st[w]&mask != f.st[x]&mask {
			differ = true
			break
		}
	}
	if !differ {
		return
	}
	if f.st[x]&fReceipt == 0 {
		for _, w := range s.g.adj[x] {
			if s.up[w] && !s.hostile[w] && f.st[w]&fReceipt != 0 && f.rcHop[w] > 0 {
				s.setSt(d, x, f.st[x]&^fHeld|fReceipt)
				f.rcHop[x] = f.rcHop[w] - 1
				s.countFlood(d, 1)
				break
			}
		}
	}
	if f.st[x]&fReceipt != 0 {
		if i := slices.Index(d.holders, x); i >= 0 {
			d.holders = slices.Delete(d.holders, i, i+1)
		}
		s.spread(d, []int32{x}, true, d.fallback)
		return
	}
	if f.st[x]&(fHeld|fDropped) == 0 {
		for _, w := range s.g.adj[x] {
			if s.up[w] && !s.hostile[w] && f.st[w]&fHeld != 0 && f.dmHop[w] > 0 {
				s.countFlood(d, 1)
				if s.hostile[x] {
					s.setSt(d, x, f.st[x]|fDropped)
					return
				}
				s.setSt(d, x, f.st[x]|fHeld|fEver)
				f.dmHop[x] = f.dmHop[w] - 1
				break
			}
		}
	}
	if f.st[x]&fHeld != 0 {
		s.spread(d, []int32{x}, false, d.fallback)
	}
}

func (s *sim) countFlood(d *dm, n int) {
	if d.fallback {
		s.res.TxFallback += n
	} else {
		s.res.TxFlood += n
	}
}

func (s *sim) nodeToggle(x int32) {
	s.up[x] = !s.up[x]
	s.upVer++
	if !s.up[x] {
		return
	}
	// Anti-entropy with each up neighbour, on the DMs they disagree on.
	for word := range s.heldBits[x] {
		var diff uint64
		for _, w := range s.g.adj[x] {
			if s.up[w] {
				diff |= s.heldBits[x][word] ^ s.heldBits[w][word]
				diff |= s.rcBits[x][word] ^ s.rcBits[w][word]
			}
		}
		for diff != 0 {
			i := word*64 + bits.TrailingZeros64(diff)
			diff &= diff - 1
			if d := s.dms[i]; d != nil && !d.expired && d.fl != nil {
				s.syncNode(d, x)
			}
		}
	}
	for _, d := range s.dms {
		if d != nil && !d.expired && d.fbPending && d.s == x {
			s.startFallback(d)
		}
	}
	if s.flood {
		for u := range s.online {
			if s.home[u] == x && s.online[u] {
				for _, d := range s.dmsTo[u] {
					s.tryDeliver(d)
				}
			}
		}
		return
	}
	// Placement nodes retry their pushes to it (tick); its clients fetch.
	for _, u := range s.bucketUsersAt(x) {
		for _, d := range s.dmsTo[u] {
			s.tryDeliver(d)
		}
	}
}

func (s *sim) bucketUsersAt(x int32) []int32 {
	var out []int32
	for u, h := range s.home {
		if h == x {
			out = append(out, int32(u))
		}
	}
	return out
}

func (s *sim) userToggle(u int32) {
	s.online[u] = !s.online[u]
	if !s.online[u] || !s.up[s.home[u]] {
		return
	}
	for _, d := range s.dmsTo[u] {
		s.tryDeliver(d)
	}
}

func (s *sim) tick() {
	for _, d := range s.dms {
		if d == nil {
			continue
		}
		if !d.expired && s.now >= d.sent+s.cfg.TTL {
			d.expired = true
		}
	}
	if s.flood {
		return
	}
	// Renewals of watches.
	for b := range s.bucketUsers {
		for _, w := range slices.Clone(s.watchers(b)) {
			key := [2]int64{int64(w), int64(b)}
			last, ok := s.lastPull[key]
			if !ok {
				// Watches were set up before the run, at spread-out times.
				x := (uint64(w)<<32 | uint64(b)) * 0x9e3779b97f4a7c15
				x ^= x >> 29
				last = -time.Duration(x % uint64(s.cfg.Renew))
				s.lastPull[key] = last
			}
			if s.now-last >= s.cfg.Renew {
				s.pull(w, b)
			}
		}
	}
	for _, d := range s.dms {
		if d == nil || d.expired {
			continue
		}
		if d.fbPending && s.up[d.s] {
			s.startFallback(d)
		}
		if !d.rcSender && !d.fallback && s.up[d.s] {
			// Until its receipt, the sender's node places at the nodes of
			// its view it has not reached yet (down at first, or new after
			// a generation flip).
			s.placeDM(d)
		}
		if d.checkPending {
			s.fetchCheck(d)
		}
		// Placement nodes retry pushes to watchers they could not reach.
		if !d.delivered {
			for _, p := range d.holders {
				if s.up[p] {
					s.pushToWatchers(d, p)
				}
			}
		}
		if d.delivered {
			s.retryReceipt(d)
		}
	}
	s.handover()
}

// retryReceipt re-sends the receipt to placement nodes of the recipient's
// view that still hold a copy (they were down), and to the sender.
func (s *sim) retryReceipt(d *dm) {
	if d.rcSender && len(d.holders) == 0 {
		return
	}
	if len(d.holders) > 0 && s.up[d.h] {
		for _, p := range s.place(d.h, d.b, s.opts.K+s.cfg.PullExtra) {
			i := slices.Index(d.holders, p)
			if i < 0 {
				continue
			}
			if hops := s.dist(d.h, p); hops >= 0 {
				s.res.TxReceipt += hops
				d.holders = slices.Delete(d.holders, i, i+1)
				d.rcAt = append(d.rcAt, p)
				if d.rcFwd < 0 {
					d.rcFwd = p
				}
			}
		}
	}
	s.forwardReceipt(d)
}

// fetchCheck: a sender's node without a receipt asks the nodes it placed
// the DM at whether a watcher of the bucket has fetched it (request and
// reply counted). No one saying yes means placement failed (hostile or
// gone nodes, or views that do not meet), and it floods at once instead of
// waiting for the receipt timeout, which exists for recipients who stay
// offline and for placement nodes that lie. Hostile nodes answer yes.
func (s *sim) fetchCheck(d *dm) {
	if d.rcSender || d.fallback || d.expired {
		return
	}
	if len(d.placedAt) == 0 {
		s.res.FbUnreachable++
		s.startFallback(d)
		return
	}
	d.checkPending = false
	yes, answered := false, false
	for _, p := range d.placedAt {
		hops := s.dist(d.s, p)
		if hops < 0 {
			continue
		}
		answered = true
		s.res.TxPoll += 2 * hops
		if slices.Contains(d.rcAt, p) {
			// It has the receipt and answers with it.
			d.rcSender = true
			return
		}
		if s.hostile[p] || slices.Contains(d.fetchedFrom, p) {
			yes = true
		}
	}
	if !answered {
		// The sender's node is cut off from them: ask again next tick.
		d.checkPending = true
		return
	}
	if !yes {
		s.res.FbNotFetched++
		s.startFallback(d)
	}
}

// handover: a placement node that is no longer among the K of its own view
// for a bucket pushes its copies to those that are, then drops its own. It
// runs every tick, so a node that was down at its flip hands over when back.
func (s *sim) handover() {
	for _, d := range s.dms {
		if d == nil || d.expired || d.delivered || len(d.holders) == 0 {
			continue
		}
		for _, p := range slices.Clone(d.holders) {
			if !s.up[p] {
				continue
			}
			set := s.place(p, d.b, s.opts.K)
			if slices.Contains(set, p) {
				continue
			}
			moved := false
			for _, q := range set {
				hops := s.dist(p, q)
				if hops < 0 || slices.Contains(d.holders, q) {
					continue
				}
				s.res.TxHandover += hops
				moved = true
				if !s.hostile[q] && !s.dropPlaced {
					d.holders = append(d.holders, q)
					d.everStored = addOnce(d.everStored, q)
					s.pushToWatchers(d, q)
				}
			}
			if moved {
				if i := slices.Index(d.holders, p); i >= 0 {
					d.holders = slices.Delete(d.holders, i, i+1)
				}
			}
		}
	}
}

// runSim runs one scenario in both modes on the same mesh, users and DMs.
func runSim(cfg simConfig, floodToo bool) (pl, fl simResult) {
	pl = newSim(cfg, false).run()
	if floodToo {
		fl = newSim(cfg, true).run()
	}
	return pl, fl
}
