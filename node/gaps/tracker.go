package gaps

import (
	"cmp"
	"crypto/sha256"
	"encoding/hex"
	"slices"
	"sync"
	"time"

	"github.com/quicproquo/qpq/mesh/identity"
	"github.com/quicproquo/qpq/node/e2e"
)

// Defaults of Config's zero fields.
const (
	DefaultMaxStreams = 1024
	DefaultMaxGaps    = 16
	DefaultMaxJump    = 1000
	DefaultMaxTTL     = 7 * 24 * time.Hour // DESIGN: the default and usual maximum DM TTL
)

// MaxConvLen is the longest conversation key kept as it is; a longer one
// is tracked under "sha256:" and its hash.
const MaxConvLen = 255

// ConvDM is the conversation key of the DMs a sender sends the reader:
// a sender's DM counter counts the messages to one recipient.
const ConvDM = "dm"

// ConvChannel is the conversation key of a channel, from its id.
func ConvChannel(id [32]byte) string { return "ch:" + hex.EncodeToString(id[:]) }

// recentLen is how many arrivals per stream are remembered to tell a
// resend (same number, same send time) from a new count (same number,
// another send time).
const recentLen = 8

// Config sets up a Tracker. Every zero field takes its default.
type Config struct {
	// Now is the reader's clock. Default time.Now.
	Now func() time.Time
	// MaxStreams bounds the sender-conversation pairs tracked; the least
	// recently heard from is dropped first. Default DefaultMaxStreams.
	MaxStreams int
	// MaxGaps bounds the gap ranges kept per pair; the oldest (lowest
	// numbers) are dropped first and no longer reported. Default
	// DefaultMaxGaps.
	MaxGaps int
	// MaxJump is the largest number of skipped messages reported as a
	// gap; a larger leap is taken as a restarted count. Default
	// DefaultMaxJump.
	MaxJump uint64
	// MaxTTL is how long a skipped message may still arrive when the
	// message revealing the gap gives no TTL, and caps one that gives
	// more. Default DefaultMaxTTL.
	MaxTTL time.Duration
}

// State is where a skipped message stands.
type State uint8

// States of a Gap.
const (
	Pending State = 1 // not yet arrived; may still come
	Missing State = 2 // its TTL has passed: it will not come
)

// String returns "pending" or "missing".
func (s State) String() string {
	switch s {
	case Pending:
		return "pending"
	case Missing:
		return "missing"
	}
	return "unknown"
}

// Kind says what changed in a Notice.
type Kind uint8

// Kinds of Notice.
const (
	// KindPending: a message skipped numbers; Count messages are newly
	// pending.
	KindPending Kind = iota + 1
	// KindMissing: Count pending messages turned missing.
	KindMissing
	// KindArrived: a late message filled its place in a gap (Count 1).
	KindArrived
	// KindRestarted: the sender's numbering started anew (reinstall, or a
	// second device); earlier gaps are dropped and Count is how many were.
	KindRestarted
)

// Message is what the Tracker needs of one opened message.
type Message struct {
	From   identity.Fingerprint // the sender
	Conv   string               // the conversation: ConvDM, ConvChannel(id), ...
	Seq    uint64               // e2e.Opened.Seq; 0 (unknown) is ignored
	SentAt time.Time            // the sender's clock: told resends from new counts, never timed
	TTL    time.Duration        // e2e.Opened.TTL; 0 when unknown
}

// MessageOf is the Message for an opened DM (conv ConvDM) or channel
// message (conv ConvChannel(id)).
func MessageOf(o e2e.Opened, conv string) Message {
	return Message{From: o.From, Conv: conv, Seq: o.Seq, SentAt: o.SentAt, TTL: o.TTL}
}

// Notice reports a change for one sender in one conversation, with the
// counts after it. Text words it for a person.
type Notice struct {
	From    identity.Fingerprint
	Conv    string
	Kind    Kind
	Count   uint64 // messages this change is about
	Pending uint64 // from From in Conv, not yet arrived, after the change
	Missing uint64 // from From in Conv, missing, after the change
}

// Gap is a run of skipped numbers from one sender in one conversation.
type Gap struct {
	From        identity.Fingerprint
	Conv        string
	First, Last uint64 // the skipped numbers, inclusive
	State       State
	Seen        time.Time // reader's clock: when the gap was first seen
	Deadline    time.Time // reader's clock: when it turns (or turned) missing
}

// Count is how many messages the gap holds.
func (g Gap) Count() uint64 { return g.Last - g.First + 1 }

// Result is what Observe found.
type Result struct {
	// Duplicate: this very message (number and send time) arrived before;
	// a resend. The caller may skip showing it again.
	Duplicate bool
	// Notices are the changes this arrival made (and gaps of its sender
	// that turned missing meanwhile).
	Notices []Notice
}

// Tracker follows the sequence numbers of every sender and conversation.
// It is safe for concurrent use.
type Tracker struct {
	now        func() time.Time
	maxStreams int
	maxGaps    int
	maxJump    uint64
	maxTTL     time.Duration

	mu      sync.Mutex // guards the fields below
	tick    uint64     // logical time of the last Observe, for eviction
	streams map[streamKey]*stream
}

type streamKey struct {
	from identity.Fingerprint
	conv string
}

// stream is one sender's count in one conversation.
type stream struct {
	high     uint64 // highest number seen
	highSent int64  // its send time, sender's clock, Unix ms
	floor    uint64 // numbers below are not tracked
	used     uint64 // Tracker.tick when last heard from
	recent   []seen // the last arrivals, oldest first, at most recentLen
	gaps     []gap  // sorted, disjoint, within [floor, high)
}

type seen struct {
	seq  uint64
	sent int64
}

type gap struct {
	first, last    uint64
	seen, deadline int64 // reader's clock, Unix ms
	missing        bool
}

// New returns an empty Tracker.
func New(cfg Config) *Tracker {
	t := &Tracker{now: cfg.Now, maxStreams: cfg.MaxStreams, maxGaps: cfg.MaxGaps, maxJump: cfg.MaxJump, maxTTL: cfg.MaxTTL,
		streams: map[streamKey]*stream{}}
	if t.now == nil {
		t.now = time.Now
	}
	if t.maxStreams <= 0 {
		t.maxStreams = DefaultMaxStreams
	}
	if t.maxGaps <= 0 {
		t.maxGaps = DefaultMaxGaps
	}
	if t.maxJump == 0 {
		t.maxJump = DefaultMaxJump
	}
	if t.maxTTL <= 0 {
		t.maxTTL = DefaultMaxTTL
	}
	return t
}

// convKey bounds a conversation key's length.
func convKey(conv string) string {
	if len(conv) <= MaxConvLen {
		return conv
	}
	h := sha256.Sum256([]byte(conv))
	return "sha256:" + hex.EncodeToString(h[:])
}

// Observe records one opened message and returns what changed. A message
// with Seq 0 (unknown) changes nothing.
func (t *Tracker) Observe(m Message) Result {
	if m.Seq == 0 {
		return Result{}
	}
	k := streamKey{m.From, convKey(m.Conv)}
	now := t.now().UnixMilli()
	sent := m.SentAt.UnixMilli()

	t.mu.Lock()
	defer t.mu.Unlock()
	t.tick++
	s := t.streams[k]
	if s == nil {
		t.evictLocked(t.maxStreams - 1)
		s = &stream{high: m.Seq, highSent: sent, floor: m.Seq}
		s.remember(m.Seq, sent)
		s.used = t.tick
		t.streams[k] = s
		return Result{}
	}
	s.used = t.tick

	var res Result
	note := func(kind Kind, n uint64) {
		p, x := s.counts()
		res.Notices = append(res.Notices, Notice{From: k.from, Conv: k.conv, Kind: kind, Count: n, Pending: p, Missing: x})
	}
	if n := s.expire(now); n > 0 {
		note(KindMissing, n)
	}

	switch {
	case m.Seq > s.high:
		skipped := m.Seq - s.high - 1
		switch {
		case skipped > t.maxJump:
			note(KindRestarted, s.restart(m.Seq, sent))
			return res
		case skipped > 0:
			s.gaps = append(s.gaps, gap{first: s.high + 1, last: m.Seq - 1, seen: now, deadline: now + t.ttl(m.TTL).Milliseconds()})
			s.capGaps(t.maxGaps)
		}
		s.high, s.highSent = m.Seq, sent
		s.remember(m.Seq, sent)
		if skipped > 0 {
			note(KindPending, skipped)
		}
	case s.fill(m.Seq):
		// Splitting a gap in two adds one: keep the bound.
		s.capGaps(t.maxGaps)
		s.remember(m.Seq, sent)
		note(KindArrived, 1)
	default:
		// Not new and not awaited: a resend, a message from before the
		// count started, or a new count.
		if r, ok := s.recentSent(m.Seq); ok {
			if r == sent {
				res.Duplicate = true
				return res
			}
			note(KindRestarted, s.restart(m.Seq, sent)) // two messages, one number
			return res
		}
		if sent > s.highSent {
			note(KindRestarted, s.restart(m.Seq, sent)) // numbers went back, time forward
		}
	}
	return res
}

// ttl is how long a gap revealed by a message with TTL d stays pending.
func (t *Tracker) ttl(d time.Duration) time.Duration {
	if d <= 0 || d > t.maxTTL {
		return t.maxTTL
	}
	return d
}

// evictLocked drops the least recently heard from streams until at most
// keep are left.
func (t *Tracker) evictLocked(keep int) {
	if len(t.streams) <= keep {
		return
	}
	keys := make([]streamKey, 0, len(t.streams))
	for k := range t.streams {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b streamKey) int {
		if c := cmp.Compare(t.streams[a].used, t.streams[b].used); c != 0 {
			return c
		}
		return cmpKey(a, b)
	})
	for _, k := range keys[:len(keys)-keep] {
		delete(t.streams, k)
	}
}

func cmpKey(a, b streamKey) int {
	if a.from != b.from {
		if a.from.Less(b.from) {
			return -1
		}
		return 1
	}
	return cmp.Compare(a.conv, b.conv)
}

// Check turns pending gaps whose time has passed into missing ones and
// returns a KindMissing notice per sender and conversation that changed.
// Call it now and then (a minute is plenty) and after UnmarshalBinary.
func (t *Tracker) Check() []Notice {
	now := t.now().UnixMilli()
	t.mu.Lock()
	defer t.mu.Unlock()
	var out []Notice
	for k, s := range t.streams {
		if n := s.expire(now); n > 0 {
			p, x := s.counts()
			out = append(out, Notice{From: k.from, Conv: k.conv, Kind: KindMissing, Count: n, Pending: p, Missing: x})
		}
	}
	slices.SortFunc(out, func(a, b Notice) int { return cmpKey(streamKey{a.From, a.Conv}, streamKey{b.From, b.Conv}) })
	return out
}

// Gaps lists every gap tracked, pending and missing, by sender,
// conversation and number.
func (t *Tracker) Gaps() []Gap {
	t.mu.Lock()
	defer t.mu.Unlock()
	var out []Gap
	for k, s := range t.streams {
		for _, g := range s.gaps {
			st := Pending
			if g.missing {
				st = Missing
			}
			out = append(out, Gap{From: k.from, Conv: k.conv, First: g.first, Last: g.last, State: st,
				Seen: time.UnixMilli(g.seen), Deadline: time.UnixMilli(g.deadline)})
		}
	}
	slices.SortFunc(out, func(a, b Gap) int {
		if c := cmpKey(streamKey{a.From, a.Conv}, streamKey{b.From, b.Conv}); c != 0 {
			return c
		}
		return cmp.Compare(a.First, b.First)
	})
	return out
}

// Forget drops what is tracked of from in conv (a removed contact, a left
// channel).
func (t *Tracker) Forget(from identity.Fingerprint, conv string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.streams, streamKey{from, convKey(conv)})
}

// remember records an arrival for duplicate detection.
func (s *stream) remember(seq uint64, sent int64) {
	if len(s.recent) >= recentLen {
		s.recent = slices.Delete(s.recent, 0, len(s.recent)-recentLen+1)
	}
	s.recent = append(s.recent, seen{seq, sent})
}

// recentSent returns the send time of a recent arrival numbered seq.
func (s *stream) recentSent(seq uint64) (int64, bool) {
	for _, r := range s.recent {
		if r.seq == seq {
			return r.sent, true
		}
	}
	return 0, false
}

// capGaps keeps at most max gaps, forgetting the oldest (lowest) ones: the
// floor moves past them, so they are no longer tracked.
func (s *stream) capGaps(max int) {
	if len(s.gaps) <= max {
		return
	}
	drop := len(s.gaps) - max
	s.floor = s.gaps[drop-1].last + 1
	s.gaps = slices.Delete(s.gaps, 0, drop)
}

// fill removes seq from the gap holding it, reporting whether one did.
func (s *stream) fill(seq uint64) bool {
	i, found := slices.BinarySearchFunc(s.gaps, seq, func(g gap, seq uint64) int {
		switch {
		case g.last < seq:
			return -1
		case g.first > seq:
			return 1
		}
		return 0
	})
	if !found {
		return false
	}
	g := s.gaps[i]
	switch {
	case g.first == g.last:
		s.gaps = slices.Delete(s.gaps, i, i+1)
	case seq == g.first:
		s.gaps[i].first++
	case seq == g.last:
		s.gaps[i].last--
	default:
		hi := g
		hi.first = seq + 1
		s.gaps[i].last = seq - 1
		s.gaps = slices.Insert(s.gaps, i+1, hi)
	}
	return true
}

// expire marks pending gaps whose deadline has passed missing and returns
// how many messages turned missing. A reader clock that went back (a
// reboot without a real-time clock) moves the deadline back by as much,
// as if no time had passed, rather than leaving it far in the future.
func (s *stream) expire(now int64) uint64 {
	var n uint64
	for i := range s.gaps {
		g := &s.gaps[i]
		if g.missing {
			continue
		}
		if now < g.seen {
			g.deadline -= g.seen - now
			g.seen = now
		}
		if now >= g.deadline {
			g.missing = true
			n += g.last - g.first + 1
		}
	}
	return n
}

// counts returns how many messages are pending and missing.
func (s *stream) counts() (pending, missing uint64) {
	for _, g := range s.gaps {
		if g.missing {
			missing += g.last - g.first + 1
		} else {
			pending += g.last - g.first + 1
		}
	}
	return pending, missing
}

// restart starts the count anew at seq and returns how many skipped
// messages it stopped tracking.
func (s *stream) restart(seq uint64, sent int64) uint64 {
	p, x := s.counts()
	s.gaps = nil
	s.high, s.highSent, s.floor = seq, sent, seq
	s.recent = s.recent[:0]
	s.remember(seq, sent)
	return p + x
}
