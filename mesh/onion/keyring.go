package onion

import (
	"crypto/ecdh"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"
)

// A relay's onion keys rotate, and each key is honoured only while the
// cache of the packets it peeled (their replay tags) is intact: a packet
// replayed under a key whose cache was lost would be peeled and
// forwarded again, which is what an observer replays packets to see. The
// caches live in memory, so the Keyring makes a new key when it is made
// and never loads an old one: a restart (on OpenWrt the store in /tmp
// dies with a reboot anyway) retires every key the node had. A key is
// retired after its period, or at once when its cache fills (rotating
// early instead of evicting tags), and a retired key is still honoured
// for the overlap, the lifetime of a descriptor that named it, then
// dropped with its cache.

// Errors of Keyring.Peel beyond Peel's own.
var (
	ErrReplay       = errors.New("onion packet replayed")
	ErrUnknownEpoch = errors.New("onion packet under a key this relay does not hold (retired, or before its last start)")
)

// KeyringOptions configure a Keyring; zero values take the defaults.
type KeyringOptions struct {
	// Period is how long a key is the current one. Default 24 h.
	Period time.Duration
	// Overlap is how long a retired key is still honoured. Default 2 h.
	Overlap time.Duration
	// MaxTags is how many packets one key may peel (its replay cache's
	// size); the key rotates when it is reached. Default 32,768.
	MaxTags int
	// Now is a monotonic clock; nil: time since the Keyring was made.
	Now func() time.Duration
	// Rand supplies keys and the first epoch; nil: crypto/rand.
	Rand io.Reader
}

// Keyring is a relay's onion keys and their replay caches. It is safe for
// concurrent use.
type Keyring struct {
	o  KeyringOptions
	mu sync.Mutex
	// keys: the current key first, then the retired ones still honoured.
	keys []*epochKey
	// rotations counts rotations since the Keyring was made.
	rotations int64
}

type epochKey struct {
	epoch   uint32
	priv    *ecdh.PrivateKey
	born    time.Duration
	retired time.Duration // when it stopped being current; -1 while current
	tags    map[[16]byte]struct{}
}

// NewKeyring makes a Keyring with a fresh key at a random epoch.
func NewKeyring(o KeyringOptions) (*Keyring, error) {
	if o.Period <= 0 {
		o.Period = 24 * time.Hour
	}
	if o.Overlap <= 0 {
		o.Overlap = 2 * time.Hour
	}
	if o.MaxTags <= 0 {
		o.MaxTags = 32768
	}
	if o.Rand == nil {
		o.Rand = rand.Reader
	}
	if o.Now == nil {
		start := time.Now()
		o.Now = func() time.Duration { return time.Since(start) }
	}
	k := &Keyring{o: o}
	var b [4]byte
	if _, err := io.ReadFull(o.Rand, b[:]); err != nil {
		return nil, fmt.Errorf("onion epoch: %w", err)
	}
	if err := k.add(binary.BigEndian.Uint32(b[:]), o.Now()); err != nil {
		return nil, err
	}
	return k, nil
}

// add makes the key of epoch current. Called with mu held (or before the
// Keyring is shared).
func (k *Keyring) add(epoch uint32, now time.Duration) error {
	priv, err := ecdh.X25519().GenerateKey(k.o.Rand)
	if err != nil {
		return fmt.Errorf("onion key: %w", err)
	}
	if len(k.keys) > 0 {
		k.keys[0].retired = now
	}
	k.keys = append([]*epochKey{{epoch: epoch, priv: priv, born: now, retired: -1, tags: map[[16]byte]struct{}{}}}, k.keys...)
	return nil
}

// Current returns the epoch and public key to publish.
func (k *Keyring) Current() (uint32, *ecdh.PublicKey) {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.keys[0].epoch, k.keys[0].priv.PublicKey()
}

// Tick rotates the current key when its period is over or its cache is
// full, and drops retired keys past the overlap. It reports whether the
// current key changed (the descriptor must be published again).
func (k *Keyring) Tick() (bool, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.tick(k.o.Now())
}

func (k *Keyring) tick(now time.Duration) (bool, error) {
	rotated := false
	cur := k.keys[0]
	if now-cur.born >= k.o.Period || len(cur.tags) >= k.o.MaxTags {
		if err := k.add(cur.epoch+1, now); err != nil {
			return false, err
		}
		k.rotations++
		rotated = true
	}
	kept := k.keys[:1]
	for _, e := range k.keys[1:] {
		if now-e.retired < k.o.Overlap {
			kept = append(kept, e)
		}
	}
	clear(k.keys[len(kept):])
	k.keys = kept
	return rotated, nil
}

// Peel peels pkt with the key its epoch names and records its replay tag;
// a packet under a key not held is refused with ErrUnknownEpoch, one seen
// before with ErrReplay. A retired key whose cache is full refuses every
// new packet (ErrReplay: it cannot tell).
func (k *Keyring) Peel(pkt []byte) (*Peeled, error) {
	epoch, err := Epoch(pkt)
	if err != nil {
		return nil, err
	}
	k.mu.Lock()
	var e *epochKey
	for _, c := range k.keys {
		if c.epoch == epoch {
			e = c
			break
		}
	}
	k.mu.Unlock()
	if e == nil {
		return nil, fmt.Errorf("%w: epoch %d", ErrUnknownEpoch, epoch)
	}
	// Peeled outside mu: two scalar multiplications.
	p, err := Peel(pkt, e.priv)
	if err != nil {
		return nil, err
	}
	var tag [16]byte
	copy(tag[:], p.Tag[:])
	k.mu.Lock()
	defer k.mu.Unlock()
	if _, seen := e.tags[tag]; seen {
		return nil, fmt.Errorf("%w (epoch %d)", ErrReplay, epoch)
	}
	if len(e.tags) >= k.o.MaxTags {
		return nil, fmt.Errorf("%w: epoch %d's replay cache is full", ErrReplay, epoch)
	}
	e.tags[tag] = struct{}{}
	return p, nil
}

// KeyringStats is what a Keyring holds.
type KeyringStats struct {
	Epoch     uint32 // the current key's
	Keys      int    // keys honoured: the current one and retired ones in their overlap
	Tags      int    // replay tags held, all keys
	Rotations int64  // since start
}

// Stats returns the counts now.
func (k *Keyring) Stats() KeyringStats {
	k.mu.Lock()
	defer k.mu.Unlock()
	s := KeyringStats{Epoch: k.keys[0].epoch, Keys: len(k.keys), Rotations: k.rotations}
	for _, e := range k.keys {
		s.Tags += len(e.tags)
	}
	return s
}
