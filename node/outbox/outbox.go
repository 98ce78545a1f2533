package outbox

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/quicproquo/qpq/gossip"
	"github.com/quicproquo/qpq/mesh/identity"
	"github.com/quicproquo/qpq/node/atrest"
	"github.com/quicproquo/qpq/node/e2e"
	"github.com/quicproquo/qpq/schemas"
)

// FileName is the outbox file in the home dir.
const FileName = "outbox.db"

// Defaults for Config's bounds.
const (
	DefaultMaxEntries = 1000
	DefaultMaxBytes   = 16 << 20
)

// Storage layout (add, never change). Bucket names and record keys are
// not secret; every value is sealed (atrest) for its bucket and key.
var (
	bEntries = []byte("entries") // ref (8, big endian) -> sealed record
	bTags    = []byte("tags")    // Name("tag", receipt tag) -> ref, while queued or stored
	bIDs     = []byte("ids")     // Name("id", envelope id) -> ref
	bSeq     = []byte("seq")     // Name("seq", conversation) -> sealed uint64 (the last used)
	bBundles = []byte("bundles") // Name("bundle", fingerprint) -> sealed bundle record
	bMeta    = []byte("meta")    // "check" -> sealed checkText
	kCheck   = []byte("check")
)

const checkText = "qpq outbox v1"

// Kind is what an entry carries.
type Kind string

// Entry kinds.
const (
	DM        Kind = "dm"
	Broadcast Kind = "broadcast"
)

// Message is what Add takes: a body for one recipient or one channel.
type Message struct {
	To     identity.Fingerprint // the recipient of a DM
	ToName string               // the contact's name, for display ("" if none)
	// Channel, when set, posts to that channel instead of To.
	Channel     *e2e.ChannelKey
	ChannelName string // the channel's local name
	Body        []byte // at most gossip.MaxBody bytes
	TTL         time.Duration
	Hops        uint8
}

// Entry is one message in the outbox.
type Entry struct {
	Ref       uint64    // local number, in order of writing; stable
	ID        gossip.ID // the envelope id; zero until sealed (see Sealed)
	Kind      Kind
	To        identity.Fingerprint // DM recipient
	ToName    string
	Channel   string   // broadcast: the channel's local name
	ChannelID [32]byte // broadcast: the channel id
	Body      []byte
	Seq       uint64 // per-conversation sequence number, taken when sealed (0 before)
	Created   time.Time
	TTL       time.Duration
	Hops      uint8
	State     State
	Reason    string // why it failed, or the last send error while queued
	Attempts  int    // enqueue attempts
	Changed   time.Time
	// Envelope is the sealed envelope (TTLSeconds as first written); its
	// ID is zero until sealed.
	Envelope gossip.Envelope
	// ReceiptTag is the DM's receipt tag (zero for broadcasts and
	// unsealed DMs).
	ReceiptTag [32]byte
}

// Sealed reports whether the entry's envelope (and so its id) is fixed.
// A DM to someone whose key bundle was never seen is sealed when the
// Sender first finds the bundle, before it is sent.
func (e Entry) Sealed() bool { return e.ID != (gossip.ID{}) }

// ExpiresAt is when the entry's TTL ends.
func (e Entry) ExpiresAt() time.Time { return e.Created.Add(e.TTL) }

// Conversation is the key of e's per-conversation sequence: the
// recipient's fingerprint for a DM, the channel id for a broadcast.
func (e Entry) Conversation() [32]byte {
	if e.Kind == Broadcast {
		return e.ChannelID
	}
	return e.To
}

// Config tunes an Outbox; the zero value is usable.
type Config struct {
	// MaxEntries and MaxBytes bound the file; zero: DefaultMaxEntries,
	// DefaultMaxBytes. To make room, Add drops the oldest final entries,
	// then the oldest stored ones (the mesh holds those; only their
	// delivered notice is lost); never a queued one.
	MaxEntries int
	MaxBytes   int64
	// Timeout bounds waiting for another process that holds the file;
	// zero: 3 s.
	Timeout time.Duration
	// Now is the clock; nil: time.Now.
	Now func() time.Time
	// OnChange, if set, is called after this Outbox commits a new entry
	// or a state change, with the entry as written. It must not block
	// and must not call back into the Outbox.
	OnChange func(Entry)
}

// Outbox is the user's outbox file. It is safe for concurrent use, and
// several processes may use one file (they take turns).
type Outbox struct {
	db  atrest.DB
	u   *e2e.User
	key *atrest.Key
	cfg Config

	mu     sync.Mutex // guards the fields below
	tags   map[string]bool
	tagsAt time.Time
}

// Open opens (creating) the outbox at path for user u and checks that it
// was written under u's key (else ErrWrongKey).
func Open(path string, u *e2e.User, cfg Config) (*Outbox, error) {
	if cfg.MaxEntries <= 0 {
		cfg.MaxEntries = DefaultMaxEntries
	}
	if cfg.MaxBytes <= 0 {
		cfg.MaxBytes = DefaultMaxBytes
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	o := &Outbox{db: atrest.DB{Path: path, Timeout: cfg.Timeout}, u: u, key: atrest.New(u.AtRestKey("outbox")), cfg: cfg}
	err := o.db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bEntries, bTags, bIDs, bSeq, bBundles, bMeta} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		m := tx.Bucket(bMeta)
		if v := m.Get(kCheck); v != nil {
			pt, err := o.key.Open(slot(bMeta, kCheck), v)
			if err != nil || string(pt) != checkText {
				return fmt.Errorf("%s: %w", path, ErrWrongKey)
			}
			return nil
		}
		return m.Put(kCheck, o.key.Seal(slot(bMeta, kCheck), []byte(checkText)))
	})
	if err != nil {
		return nil, fmt.Errorf("open outbox: %w", err)
	}
	return o, nil
}

// Path returns the outbox file's path.
func (o *Outbox) Path() string { return o.db.Path }

// Close releases the Outbox; the file is closed after each operation
// already, so it only exists for symmetry. Safe to call twice.
func (o *Outbox) Close() error { return nil }

func slot(bucket, key []byte) []byte {
	s := make([]byte, 0, len(bucket)+1+len(key))
	s = append(append(s, bucket...), '/')
	return append(s, key...)
}

func refKey(ref uint64) []byte { return binary.BigEndian.AppendUint64(nil, ref) }

// Add writes m to the outbox as queued, sealed now when it can be (a
// channel message, or a DM whose recipient's bundle is remembered), and
// returns the entry. Nothing is sent: a Sender does that.
func (o *Outbox) Add(m Message) (Entry, error) {
	if (m.Channel == nil) == m.To.IsZero() {
		return Entry{}, ErrNoRecipient
	}
	if len(m.Body) > gossip.MaxBody {
		return Entry{}, fmt.Errorf("%w: %d bytes, at most %d", e2e.ErrBodyTooLarge, len(m.Body), gossip.MaxBody)
	}
	if m.TTL < time.Second {
		return Entry{}, fmt.Errorf("outbox: TTL %v is under a second", m.TTL)
	}
	now := o.cfg.Now()
	e := Entry{
		Kind: DM, To: m.To, ToName: m.ToName, Body: append([]byte(nil), m.Body...),
		Created: now.UTC().Truncate(time.Millisecond), TTL: m.TTL.Truncate(time.Second), Hops: m.Hops,
		State: Queued, Changed: now.UTC(),
	}
	if m.Channel != nil {
		e.Kind, e.Channel, e.ChannelID, e.To = Broadcast, m.ChannelName, m.Channel.ID(), identity.Fingerprint{}
	}
	err := o.db.Update(func(tx *bolt.Tx) error {
		// The record holds the body and the sealed payload, both base64
		// in JSON: about 3 times the body, and the KEM overhead.
		if err := o.makeRoomLocked(tx, 3*int64(len(m.Body))+4096); err != nil {
			return err
		}
		ref, err := tx.Bucket(bEntries).NextSequence()
		if err != nil {
			return err
		}
		e.Ref = ref
		// The sequence number is taken when the message is sealed, so one
		// that fails before (no bundle anywhere) leaves no gap.
		if m.Channel != nil {
			if e.Seq, err = o.nextSeqTx(tx, e.Conversation()); err != nil {
				return err
			}
			if err := o.sealChannel(&e, *m.Channel); err != nil {
				return err
			}
		} else if b, ok := o.bundleTx(tx, m.To); ok {
			if e.Seq, err = o.nextSeqTx(tx, e.Conversation()); err != nil {
				return err
			}
			if err := o.sealDM(&e, b); err != nil {
				return err
			}
		}
		return o.putTx(tx, e)
	})
	if err != nil {
		return Entry{}, fmt.Errorf("add to outbox %s: %w", o.db.Path, err)
	}
	o.noteTag(e)
	o.changed(e)
	return e, nil
}

// sealDM seals e's body to b (once; the envelope id is fixed from here).
func (o *Outbox) sealDM(e *Entry, b e2e.Bundle) error {
	s, err := sealDM(o.u, b, e.Body, e.Created, e.Seq, e.TTL)
	if err != nil {
		return fmt.Errorf("seal: %w", err)
	}
	env := gossip.Envelope{
		Kind: schemas.Envelope_Kind_dm, Destination: append([]byte(nil), e.To[:]...),
		TTLSeconds: uint32(e.TTL / time.Second), HopLimit: e.Hops,
		ReceiptTag: append([]byte(nil), s.ReceiptTag[:]...), Payload: s.Payload,
	}
	env.ID = gossip.ComputeID(env.Kind, env.Destination, env.ReceiptTag, env.Payload)
	e.Envelope, e.ID, e.ReceiptTag = env, env.ID, s.ReceiptTag
	return nil
}

func (o *Outbox) sealChannel(e *Entry, k e2e.ChannelKey) error {
	payload, err := sealChannel(o.u, k, e.Body, e.Created, e.Seq, e.TTL)
	if err != nil {
		return fmt.Errorf("seal: %w", err)
	}
	env := gossip.Envelope{
		Kind: schemas.Envelope_Kind_broadcast, Destination: append([]byte(nil), e.ChannelID[:]...),
		TTLSeconds: uint32(e.TTL / time.Second), HopLimit: e.Hops, Payload: payload,
	}
	env.ID = gossip.ComputeID(env.Kind, env.Destination, nil, env.Payload)
	e.Envelope, e.ID = env, env.ID
	return nil
}

// makeRoomLocked drops final, then stored entries, oldest first, until
// one more entry of about need bytes fits; ErrFull when queued ones alone
// fill the outbox.
func (o *Outbox) makeRoomLocked(tx *bolt.Tx, need int64) error {
	type info struct {
		ref   uint64
		state State
		size  int64
	}
	var all []info
	var total int64
	c := tx.Bucket(bEntries).Cursor()
	for k, v := c.First(); k != nil; k, v = c.Next() {
		e, err := o.decode(k, v)
		if err != nil {
			return err
		}
		all = append(all, info{e.Ref, e.State, int64(len(v))})
		total += int64(len(v))
	}
	fits := func() bool { return len(all) < o.cfg.MaxEntries && total+need <= o.cfg.MaxBytes }
	for _, pass := range []func(State) bool{State.Final, func(s State) bool { return s == Stored }} {
		for i := 0; i < len(all) && !fits(); i++ {
			if all[i].ref == 0 || !pass(all[i].state) {
				continue
			}
			if err := o.deleteTx(tx, all[i].ref); err != nil {
				return err
			}
			total -= all[i].size
			all = append(all[:i], all[i+1:]...)
			i--
		}
	}
	if !fits() {
		return fmt.Errorf("%w: %d messages (%d bytes) are waiting to be sent, the most it holds is %d messages or %d bytes; connect to a node so they go out",
			ErrFull, len(all), total, o.cfg.MaxEntries, o.cfg.MaxBytes)
	}
	return nil
}

func (o *Outbox) deleteTx(tx *bolt.Tx, ref uint64) error {
	k := refKey(ref)
	v := tx.Bucket(bEntries).Get(k)
	if v == nil {
		return nil
	}
	if e, err := o.decode(k, v); err == nil {
		if e.Sealed() {
			tx.Bucket(bIDs).Delete(o.key.Name("id", e.ID[:]))
		}
		tx.Bucket(bTags).Delete(o.key.Name("tag", e.ReceiptTag[:]))
	}
	return tx.Bucket(bEntries).Delete(k)
}

// NextSeq returns the next sequence number of a conversation (1, 2, ...),
// persisted so that it never repeats. Add takes one for each entry; call
// NextSeq only for messages sent some other way.
func (o *Outbox) NextSeq(conversation [32]byte) (uint64, error) {
	var n uint64
	err := o.db.Update(func(tx *bolt.Tx) error {
		var err error
		n, err = o.nextSeqTx(tx, conversation)
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("outbox %s: next sequence: %w", o.db.Path, err)
	}
	return n, nil
}

func (o *Outbox) nextSeqTx(tx *bolt.Tx, conv [32]byte) (uint64, error) {
	b := tx.Bucket(bSeq)
	k := o.key.Name("seq", conv[:])
	var n uint64
	if v := b.Get(k); v != nil {
		pt, err := o.key.Open(slot(bSeq, k), v)
		if err != nil || len(pt) != 8 {
			return 0, fmt.Errorf("sequence record: %w", atrest.ErrCannotOpen)
		}
		n = binary.BigEndian.Uint64(pt)
	}
	n++
	return n, b.Put(k, o.key.Seal(slot(bSeq, k), binary.BigEndian.AppendUint64(nil, n)))
}

// record is an Entry as stored (add fields, never change).
type record struct {
	Ref        uint64               `json:"ref"`
	Kind       Kind                 `json:"kind"`
	To         identity.Fingerprint `json:"to,omitzero"`
	ToName     string               `json:"to_name,omitempty"`
	Channel    string               `json:"channel,omitempty"`
	ChannelID  []byte               `json:"channel_id,omitempty"`
	Body       []byte               `json:"body"`
	Seq        uint64               `json:"seq"`
	Created    time.Time            `json:"created"`
	TTL        int64                `json:"ttl_s"`
	Hops       uint8                `json:"hops"`
	State      State                `json:"state"`
	Reason     string               `json:"reason,omitempty"`
	Attempts   int                  `json:"attempts"`
	Changed    time.Time            `json:"changed"`
	EnvKind    uint16               `json:"env_kind,omitempty"`
	EnvTTL     uint32               `json:"env_ttl,omitempty"`
	ReceiptTag []byte               `json:"receipt_tag,omitempty"`
	Payload    []byte               `json:"payload,omitempty"`
}

func (o *Outbox) putTx(tx *bolt.Tx, e Entry) error {
	r := record{
		Ref: e.Ref, Kind: e.Kind, To: e.To, ToName: e.ToName, Channel: e.Channel, Body: e.Body, Seq: e.Seq,
		Created: e.Created, TTL: int64(e.TTL / time.Second), Hops: e.Hops, State: e.State, Reason: e.Reason,
		Attempts: e.Attempts, Changed: e.Changed,
	}
	if e.Kind == Broadcast {
		r.ChannelID = e.ChannelID[:]
	}
	if e.Sealed() {
		r.EnvKind, r.EnvTTL, r.Payload = uint16(e.Envelope.Kind), e.Envelope.TTLSeconds, e.Envelope.Payload
		r.ReceiptTag = e.Envelope.ReceiptTag
	}
	v, err := json.Marshal(r)
	if err != nil {
		return err
	}
	k := refKey(e.Ref)
	if err := tx.Bucket(bEntries).Put(k, o.key.Seal(slot(bEntries, k), v)); err != nil {
		return err
	}
	if !e.Sealed() {
		return nil
	}
	if err := tx.Bucket(bIDs).Put(o.key.Name("id", e.ID[:]), k); err != nil {
		return err
	}
	if e.Kind == DM {
		tk := o.key.Name("tag", e.ReceiptTag[:])
		if e.State.Final() {
			return tx.Bucket(bTags).Delete(tk)
		}
		return tx.Bucket(bTags).Put(tk, k)
	}
	return nil
}

func (o *Outbox) decode(k, v []byte) (Entry, error) {
	pt, err := o.key.Open(slot(bEntries, k), v)
	if err != nil {
		return Entry{}, fmt.Errorf("entry %x: %w", k, err)
	}
	var r record
	if err := json.Unmarshal(pt, &r); err != nil {
		return Entry{}, fmt.Errorf("entry %x: %w", k, err)
	}
	e := Entry{
		Ref: r.Ref, Kind: r.Kind, To: r.To, ToName: r.ToName, Channel: r.Channel, Body: r.Body, Seq: r.Seq,
		Created: r.Created, TTL: time.Duration(r.TTL) * time.Second, Hops: r.Hops, State: r.State, Reason: r.Reason,
		Attempts: r.Attempts, Changed: r.Changed,
	}
	copy(e.ChannelID[:], r.ChannelID)
	if len(r.Payload) > 0 {
		env := gossip.Envelope{Kind: schemas.Envelope_Kind(r.EnvKind), TTLSeconds: r.EnvTTL, HopLimit: r.Hops, Payload: r.Payload}
		if e.Kind == DM {
			env.Destination = append([]byte(nil), e.To[:]...)
			env.ReceiptTag = r.ReceiptTag
			copy(e.ReceiptTag[:], r.ReceiptTag)
		} else {
			env.Destination = append([]byte(nil), e.ChannelID[:]...)
		}
		env.ID = gossip.ComputeID(env.Kind, env.Destination, env.ReceiptTag, env.Payload)
		e.Envelope, e.ID = env, env.ID
	}
	return e, nil
}

// Get returns the entry ref.
func (o *Outbox) Get(ref uint64) (Entry, error) {
	var e Entry
	err := o.db.View(func(tx *bolt.Tx) error {
		k := refKey(ref)
		v := tx.Bucket(bEntries).Get(k)
		if v == nil {
			return fmt.Errorf("%w: %d", ErrNotFound, ref)
		}
		var err error
		e, err = o.decode(k, v)
		return err
	})
	return e, err
}

// ByID returns the entry whose envelope id is id.
func (o *Outbox) ByID(id gossip.ID) (Entry, error) {
	var e Entry
	err := o.db.View(func(tx *bolt.Tx) error {
		k := tx.Bucket(bIDs).Get(o.key.Name("id", id[:]))
		v := tx.Bucket(bEntries).Get(k)
		if k == nil || v == nil {
			return fmt.Errorf("%w: %s", ErrNotFound, id)
		}
		var err error
		e, err = o.decode(k, v)
		return err
	})
	return e, err
}

// List returns every entry, oldest first, after moving those whose TTL
// has passed to expired (never nil).
func (o *Outbox) List() ([]Entry, error) {
	if _, err := o.Expire(); err != nil {
		return nil, err
	}
	out := []Entry{}
	err := o.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bEntries).ForEach(func(k, v []byte) error {
			e, err := o.decode(k, v)
			if err != nil {
				return err
			}
			out = append(out, e)
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("list outbox %s: %w", o.db.Path, err)
	}
	return out, nil
}

// update changes entry ref inside one transaction: fn edits it and says
// whether to write it. It returns the entry as written (or as found).
func (o *Outbox) update(ref uint64, fn func(tx *bolt.Tx, e *Entry) (bool, error)) (Entry, bool, error) {
	var e Entry
	var wrote bool
	err := o.db.Update(func(tx *bolt.Tx) error {
		k := refKey(ref)
		v := tx.Bucket(bEntries).Get(k)
		if v == nil {
			return fmt.Errorf("%w: %d", ErrNotFound, ref)
		}
		var err error
		if e, err = o.decode(k, v); err != nil {
			return err
		}
		if wrote, err = fn(tx, &e); err != nil || !wrote {
			return err
		}
		return o.putTx(tx, e)
	})
	if err != nil {
		return Entry{}, false, fmt.Errorf("outbox %s: %w", o.db.Path, err)
	}
	return e, wrote, nil
}

// setState moves ref from one of the states in from to to, with reason.
func (o *Outbox) setState(ref uint64, to State, reason string, from ...State) (Entry, bool, error) {
	e, wrote, err := o.update(ref, func(_ *bolt.Tx, e *Entry) (bool, error) {
		for _, f := range from {
			if e.State == f {
				e.State, e.Reason, e.Changed = to, reason, o.cfg.Now().UTC()
				return true, nil
			}
		}
		return false, nil
	})
	if wrote {
		o.changed(e)
	}
	return e, wrote, err
}

// MarkStored records that a node answered the enqueue of ref.
func (o *Outbox) MarkStored(ref uint64) (Entry, error) { return o.markStored(ref, false) }

// markStored is MarkStored, counting the attempt too when attempt is set
// (one write for both).
func (o *Outbox) markStored(ref uint64, attempt bool) (Entry, error) {
	e, wrote, err := o.update(ref, func(_ *bolt.Tx, e *Entry) (bool, error) {
		if attempt {
			e.Attempts++
		}
		if e.State != Queued {
			return attempt, nil
		}
		e.State, e.Reason, e.Changed = Stored, "", o.cfg.Now().UTC()
		return true, nil
	})
	if wrote && e.State == Stored {
		o.changed(e)
	}
	return e, err
}

// MarkFailed records that ref cannot be sent, and why.
func (o *Outbox) MarkFailed(ref uint64, reason string) (Entry, error) {
	e, _, err := o.setState(ref, Failed, reason, Queued, Stored)
	return e, err
}

// noteAttempt counts an enqueue attempt of ref and the error it met.
func (o *Outbox) noteAttempt(ref uint64, sendErr error) error {
	_, _, err := o.update(ref, func(_ *bolt.Tx, e *Entry) (bool, error) {
		e.Attempts++
		if sendErr != nil && e.State == Queued {
			e.Reason = sendErr.Error()
		}
		return true, nil
	})
	return err
}

// MarkDelivered records that the receipt for tag was seen: the DM with
// that receipt tag, if this outbox holds it queued or stored, becomes
// delivered. It is fed every receipt tag the node streams
// (client.WatchReceipts), most of them other people's, so a tag it does
// not hold is answered from memory (the pending tags, reloaded at most
// once a second). It is idempotent.
func (o *Outbox) MarkDelivered(tag [32]byte) (Entry, bool, error) {
	name := o.key.Name("tag", tag[:])
	if !o.mayHoldTag(name) {
		return Entry{}, false, nil
	}
	var ref uint64
	err := o.db.View(func(tx *bolt.Tx) error {
		if v := tx.Bucket(bTags).Get(name); len(v) == 8 {
			ref = binary.BigEndian.Uint64(v)
		}
		return nil
	})
	if err != nil || ref == 0 {
		return Entry{}, false, err
	}
	e, wrote, err := o.setState(ref, Delivered, "", Queued, Stored)
	o.mu.Lock()
	delete(o.tags, string(name))
	o.mu.Unlock()
	return e, wrote, err
}

// mayHoldTag answers from the cached pending tag names, reloading them
// when the cache is over a second old and misses (another process may
// have added an entry).
func (o *Outbox) mayHoldTag(name []byte) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.tags[string(name)] {
		return true
	}
	now := time.Now()
	if o.tags != nil && now.Sub(o.tagsAt) < time.Second {
		return false
	}
	tags := map[string]bool{}
	err := o.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bTags).ForEach(func(k, _ []byte) error {
			tags[string(k)] = true
			return nil
		})
	})
	if err != nil {
		return true // let the caller look and report the error
	}
	o.tags, o.tagsAt = tags, now
	return tags[string(name)]
}

func (o *Outbox) noteTag(e Entry) {
	if e.Kind != DM || !e.Sealed() {
		return
	}
	o.mu.Lock()
	if o.tags != nil {
		o.tags[string(o.key.Name("tag", e.ReceiptTag[:]))] = true
	}
	o.mu.Unlock()
}

// Expire moves every queued or stored entry whose TTL has passed to
// expired and returns them.
func (o *Outbox) Expire() ([]Entry, error) {
	now := o.cfg.Now()
	var done []Entry
	err := o.db.Update(func(tx *bolt.Tx) error {
		done = done[:0]
		err := tx.Bucket(bEntries).ForEach(func(k, v []byte) error {
			e, err := o.decode(k, v)
			if err != nil {
				return err
			}
			if e.State.Final() || now.Before(e.ExpiresAt()) {
				return nil
			}
			e.State, e.Changed = Expired, now.UTC()
			if e.Reason == "" || !e.Sealed() {
				e.Reason = "its TTL passed without a receipt"
			}
			done = append(done, e)
			return nil
		})
		if err != nil {
			return err
		}
		for _, e := range done {
			if err := o.putTx(tx, e); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("expire outbox %s: %w", o.db.Path, err)
	}
	for _, e := range done {
		o.changed(e)
	}
	return done, nil
}

func (o *Outbox) changed(e Entry) {
	if o.cfg.OnChange != nil {
		o.cfg.OnChange(e)
	}
}

// queued returns the queued entries, oldest first.
func (o *Outbox) queued() ([]Entry, error) {
	var out []Entry
	err := o.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bEntries).ForEach(func(k, v []byte) error {
			e, err := o.decode(k, v)
			if err != nil {
				return err
			}
			if e.State == Queued {
				out = append(out, e)
			}
			return nil
		})
	})
	return out, err
}

// sealWith seals the unsealed DM ref to bundle b and remembers b for the
// next messages to that person. When another process sealed it first,
// its envelope is kept.
func (o *Outbox) sealWith(ref uint64, b e2e.Bundle) (Entry, error) {
	e, _, err := o.update(ref, func(tx *bolt.Tx, e *Entry) (bool, error) {
		if err := o.rememberBundleTx(tx, b); err != nil {
			return false, err
		}
		if e.Sealed() || e.State != Queued {
			return false, nil
		}
		if !b.Fingerprint.Equal(e.To) {
			return false, fmt.Errorf("bundle of %s for a message to %s", b.Fingerprint, e.To)
		}
		seq, err := o.nextSeqTx(tx, e.Conversation())
		if err != nil {
			return false, err
		}
		e.Seq = seq
		return true, o.sealDM(e, b)
	})
	o.noteTag(e)
	return e, err
}

// bundleRecord is a remembered key bundle (add fields, never change).
type bundleRecord struct {
	Identity []byte `json:"identity"`
	KEMKey   []byte `json:"kem_key"`
	Sequence uint64 `json:"sequence"`
	// ReadsInner is e2e.Bundle.ReadsInner; absent in records written
	// before it existed, which then seal version 1 until the bundle is
	// seen again.
	ReadsInner int `json:"reads_inner,omitempty"`
}

// RememberBundle keeps b so that messages to its owner can be sealed
// while no node is reachable (a newer sequence replaces an older one).
func (o *Outbox) RememberBundle(b e2e.Bundle) error {
	return o.db.Update(func(tx *bolt.Tx) error { return o.rememberBundleTx(tx, b) })
}

func (o *Outbox) rememberBundleTx(tx *bolt.Tx, b e2e.Bundle) error {
	fp := identity.FingerprintOf(b.Identity)
	if old, ok := o.bundleTx(tx, fp); ok && (old.Sequence > b.Sequence || old.Sequence == b.Sequence && old.ReadsInner >= b.ReadsInner) {
		return nil
	}
	v, err := json.Marshal(bundleRecord{Identity: b.Identity, KEMKey: b.KEMKey, Sequence: b.Sequence, ReadsInner: b.ReadsInner})
	if err != nil {
		return err
	}
	k := o.key.Name("bundle", fp[:])
	return tx.Bucket(bBundles).Put(k, o.key.Seal(slot(bBundles, k), v))
}

func (o *Outbox) bundleTx(tx *bolt.Tx, fp identity.Fingerprint) (e2e.Bundle, bool) {
	k := o.key.Name("bundle", fp[:])
	v := tx.Bucket(bBundles).Get(k)
	if v == nil {
		return e2e.Bundle{}, false
	}
	pt, err := o.key.Open(slot(bBundles, k), v)
	if err != nil {
		return e2e.Bundle{}, false
	}
	var r bundleRecord
	if json.Unmarshal(pt, &r) != nil || !identity.FingerprintOf(r.Identity).Equal(fp) || len(r.KEMKey) != e2e.KEMPublicKeySize {
		return e2e.Bundle{}, false
	}
	return e2e.Bundle{Identity: r.Identity, KEMKey: r.KEMKey, Sequence: r.Sequence, Fingerprint: fp, ReadsInner: r.ReadsInner}, true
}
