// Package history keeps the messages a user received and sent (issue 11,
// item 5) in the home dir (HOME/history.db, bbolt), bounded (the oldest
// dropped first, the bound configurable, 0 keeping none) and encrypted at
// rest under the user's AtRestKey("history"), so whoever unlocks the key
// file reads it and nobody else. It also keeps small named state blobs,
// sealed the same way, such as the gap tracker's (node/gaps).
//
// Like the outbox, the file is opened for each operation and closed right
// after, so `qpq recv`, `qpq send` and a chat left open take turns.
package history

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/quicproquo/qpq/mesh/identity"
	"github.com/quicproquo/qpq/node/atrest"
	"github.com/quicproquo/qpq/node/e2e"
)

// FileName is the history file in the home dir.
const FileName = "history.db"

// DefaultLimit is how many messages are kept when nothing says otherwise.
const DefaultLimit = 1000

// MaxLimit bounds the configurable limit.
const MaxLimit = 1000000

// UseSetting as Config.Limit means: the limit saved with SetLimit, else
// DefaultLimit.
const UseSetting = -1

// Storage layout (add, never change); every value is sealed for its
// bucket and key.
var (
	bMessages = []byte("messages") // n (8, big endian, in order appended) -> sealed record
	bState    = []byte("state")    // Name("state", name) -> sealed blob
	bMeta     = []byte("meta")     // "check" -> sealed checkText
	kCheck    = []byte("check")
	kLimit    = []byte("limit") // in bMeta: sealed decimal limit set by SetLimit
)

const checkText = "qpq history v1"

// ErrWrongKey is returned by Open when the file was written under another
// identity's key (or is damaged).
var ErrWrongKey = errors.New("the history was written under another identity's key")

// Direction says who wrote a message.
type Direction string

// Directions.
const (
	In  Direction = "in"  // received
	Out Direction = "out" // sent by this user
)

// Message is one history entry.
type Message struct {
	ID   string    // the envelope id, lowercase hex ("" for a sent message not yet sealed)
	Dir  Direction // In or Out
	Kind string    // "dm" or "broadcast"
	// Peer is the other person of a DM (the sender of one received, the
	// recipient of one sent); zero for broadcasts.
	Peer    identity.Fingerprint
	From    identity.Fingerprint // the sender (the user for Out)
	Channel string               // broadcast: the channel's local name
	Body    string               // exactly as sent or received
	SentAt  time.Time            // the sender's clock
	At      time.Time            // when it was received or written
	Seq     uint64               // the sender's per-conversation sequence (0: unknown)
}

// Config tunes a Store.
type Config struct {
	// Limit is how many messages are kept; the oldest are dropped first.
	// 0 keeps none (and Open deletes what is there). UseSetting (or any
	// negative value) takes the limit saved by SetLimit, else
	// DefaultLimit. LimitFrom reads it from a flag or $QPQ_HISTORY.
	Limit int
	// Timeout bounds waiting for another process holding the file; zero:
	// 3 s.
	Timeout time.Duration
	// Now is the clock; nil: time.Now.
	Now func() time.Time
}

// LimitFrom returns the history limit from a flag value, else
// $QPQ_HISTORY, else UseSetting: a whole number from 0 (keep none) to
// MaxLimit.
func LimitFrom(flagValue string, getenv func(string) string) (int, error) {
	v, src := flagValue, "--keep"
	if v == "" {
		v, src = getenv("QPQ_HISTORY"), "QPQ_HISTORY"
	}
	if v == "" {
		return UseSetting, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 || n > MaxLimit {
		return 0, fmt.Errorf("%s %q: want a whole number of messages from 0 (keep none) to %d", src, v, MaxLimit)
	}
	return n, nil
}

// Store is the history file. It is safe for concurrent use.
type Store struct {
	db  atrest.DB
	key *atrest.Key
	cfg Config
}

// Open opens (creating) the history at path for user u, checks it was
// written under u's key (else ErrWrongKey), and trims it to the limit.
func Open(path string, u *e2e.User, cfg Config) (*Store, error) {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	s := &Store{db: atrest.DB{Path: path, Timeout: cfg.Timeout}, key: atrest.New(u.AtRestKey("history")), cfg: cfg}
	err := s.db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bMessages, bState, bMeta} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		m := tx.Bucket(bMeta)
		if v := m.Get(kCheck); v != nil {
			pt, err := s.key.Open(slot(bMeta, kCheck), v)
			if err != nil || string(pt) != checkText {
				return fmt.Errorf("%s: %w", path, ErrWrongKey)
			}
		} else if err := m.Put(kCheck, s.key.Seal(slot(bMeta, kCheck), []byte(checkText))); err != nil {
			return err
		}
		if s.cfg.Limit < 0 {
			s.cfg.Limit = DefaultLimit
			if v := m.Get(kLimit); v != nil {
				pt, err := s.key.Open(slot(bMeta, kLimit), v)
				if err != nil {
					return err
				}
				if n, err := strconv.Atoi(string(pt)); err == nil && n >= 0 && n <= MaxLimit {
					s.cfg.Limit = n
				}
			}
		}
		return s.trimTx(tx)
	})
	if err != nil {
		return nil, fmt.Errorf("open history: %w", err)
	}
	return s, nil
}

// Limit returns how many messages the store keeps.
func (s *Store) Limit() int { return s.cfg.Limit }

// SetLimit saves n (0 to MaxLimit) as the limit every later Open with
// UseSetting takes, and applies it now (dropping the oldest beyond it).
func (s *Store) SetLimit(n int) error {
	if n < 0 || n > MaxLimit {
		return fmt.Errorf("history limit %d: want 0 to %d", n, MaxLimit)
	}
	s.cfg.Limit = n
	err := s.db.Update(func(tx *bolt.Tx) error {
		if err := tx.Bucket(bMeta).Put(kLimit, s.key.Seal(slot(bMeta, kLimit), []byte(strconv.Itoa(n)))); err != nil {
			return err
		}
		return s.trimTx(tx)
	})
	if err != nil {
		return fmt.Errorf("set the history limit in %s: %w", s.db.Path, err)
	}
	return nil
}

// Close releases the Store (the file is closed after each operation
// already). Safe to call twice.
func (s *Store) Close() error { return nil }

func slot(bucket, key []byte) []byte {
	out := make([]byte, 0, len(bucket)+1+len(key))
	out = append(append(out, bucket...), '/')
	return append(out, key...)
}

// record is a Message as stored (add fields, never change).
type record struct {
	ID      string               `json:"id,omitempty"`
	Dir     Direction            `json:"dir"`
	Kind    string               `json:"kind"`
	Peer    identity.Fingerprint `json:"peer,omitzero"`
	From    identity.Fingerprint `json:"from,omitzero"`
	Channel string               `json:"channel,omitempty"`
	Body    string               `json:"body"`
	SentAt  time.Time            `json:"sent_at"`
	At      time.Time            `json:"at"`
	Seq     uint64               `json:"seq,omitempty"`
}

// Append adds messages (in order) and drops the oldest beyond the limit.
// With a limit of 0 it keeps nothing.
func (s *Store) Append(ms ...Message) error {
	if s.cfg.Limit == 0 || len(ms) == 0 {
		return nil
	}
	err := s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bMessages)
		for _, m := range ms {
			if m.At.IsZero() {
				m.At = s.cfg.Now()
			}
			v, err := json.Marshal(record(m))
			if err != nil {
				return err
			}
			n, err := b.NextSequence()
			if err != nil {
				return err
			}
			k := binary.BigEndian.AppendUint64(nil, n)
			if err := b.Put(k, s.key.Seal(slot(bMessages, k), v)); err != nil {
				return err
			}
		}
		return s.trimTx(tx)
	})
	if err != nil {
		return fmt.Errorf("append to history %s: %w", s.db.Path, err)
	}
	return nil
}

// trimTx drops the oldest messages beyond the limit.
func (s *Store) trimTx(tx *bolt.Tx) error {
	b := tx.Bucket(bMessages)
	c := b.Cursor()
	n := 0
	for k, _ := c.First(); k != nil; k, _ = c.Next() {
		n++
	}
	extra := n - s.cfg.Limit
	if extra <= 0 {
		return nil
	}
	for k, _ := c.First(); k != nil && extra > 0; k, _ = c.First() {
		if err := b.Delete(k); err != nil {
			return err
		}
		extra--
	}
	return nil
}

// Query selects messages for List. The zero value selects all.
type Query struct {
	// Peer, when set, selects the DMs with that person (both ways).
	Peer identity.Fingerprint
	// Channel, when set, selects that channel's messages.
	Channel string
	// Last, when positive, keeps only the newest Last that match.
	Last int
}

// List returns the messages matching q, oldest first (never nil).
func (s *Store) List(q Query) ([]Message, error) {
	out := []Message{}
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bMessages).ForEach(func(k, v []byte) error {
			pt, err := s.key.Open(slot(bMessages, k), v)
			if err != nil {
				return fmt.Errorf("message %x: %w", k, err)
			}
			var r record
			if err := json.Unmarshal(pt, &r); err != nil {
				return fmt.Errorf("message %x: %w", k, err)
			}
			m := Message(r)
			if (!q.Peer.IsZero() && (m.Kind != "dm" || !m.Peer.Equal(q.Peer))) || (q.Channel != "" && m.Channel != q.Channel) {
				return nil
			}
			out = append(out, m)
			if q.Last > 0 && len(out) > 2*q.Last {
				out = append(out[:0], out[len(out)-q.Last:]...)
			}
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("read history %s: %w", s.db.Path, err)
	}
	if q.Last > 0 && len(out) > q.Last {
		out = out[len(out)-q.Last:]
	}
	return out, nil
}

// State returns the blob saved under name, or nil when there is none.
func (s *Store) State(name string) ([]byte, error) {
	var out []byte
	err := s.db.View(func(tx *bolt.Tx) error {
		k := s.key.Name("state", []byte(name))
		v := tx.Bucket(bState).Get(k)
		if v == nil {
			return nil
		}
		var err error
		out, err = s.key.Open(slot(bState, k), v)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("read history state %q: %w", name, err)
	}
	return out, nil
}

// SetState saves blob under name (at most 1 MiB), sealed like messages.
func (s *Store) SetState(name string, blob []byte) error {
	if len(blob) > 1<<20 {
		return fmt.Errorf("history state %q: %d bytes is over 1 MiB", name, len(blob))
	}
	err := s.db.Update(func(tx *bolt.Tx) error {
		k := s.key.Name("state", []byte(name))
		return tx.Bucket(bState).Put(k, s.key.Seal(slot(bState, k), blob))
	})
	if err != nil {
		return fmt.Errorf("save history state %q: %w", name, err)
	}
	return nil
}
