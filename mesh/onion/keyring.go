package onion

import (
	"bufio"
	"bytes"
	"crypto/ecdh"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
)

// A relay's onion keys rotate, and each key is honoured only while the
// cache of the packets it peeled (their replay tags) is intact: a packet
// replayed under a key whose cache was lost would be peeled and forwarded
// again, which is what an observer replays packets to see. The keys are
// kept in a file in the data dir (on OpenWrt, /etc: it survives reboots)
// and the caches in the node's store (on OpenWrt, /tmp: a reboot wipes
// it). At start a key whose cache is not in the store is dropped, never
// honoured again; if that leaves no key, a new one is made at once. A key
// is retired after its period, or early when its cache fills (instead of
// evicting tags); a retired key is still honoured for the overlap (the
// lifetime of a descriptor that named it), then dropped with its cache.
// Times are on a monotonic clock that survives restarts with the store
// (gossip/store's elapsed counter), never the wall clock.

// Errors of Keyring.Peel beyond Peel's own.
var (
	ErrReplay       = errors.New("onion packet replayed")
	ErrUnknownEpoch = errors.New("onion packet under a key this relay does not hold (retired, or its replay cache was lost)")
)

// ReplayCache keeps the replay tags of each key durably; *store.Store is
// one. ReplayAdd reports whether the tag was new.
type ReplayCache interface {
	ReplayCreate(key []byte) error
	ReplayCount(key []byte) (exists bool, n int, err error)
	ReplayAdd(key, tag []byte) (fresh bool, err error)
	ReplayKeys() ([][]byte, error)
	ReplayDrop(key []byte) error
}

// KeyringOptions configure a Keyring; zero values take the defaults.
type KeyringOptions struct {
	// Period is how long a key is the current one. Default 24 h.
	Period time.Duration
	// Overlap is how long a retired key is still honoured. Default 2 h.
	Overlap time.Duration
	// MaxTags is how many packets one key may peel (its replay cache's
	// size); the key rotates when it is reached. Default 32,768.
	MaxTags int
	// File keeps the keys (mode 0600). Empty: keys live in memory and a
	// new Keyring starts with a new key.
	File string
	// Cache keeps the replay tags. Nil: memory, lost with the process;
	// File is then ignored (a key must not outlive its cache).
	Cache ReplayCache
	// Now is a monotonic clock that goes on across restarts as Cache does
	// (the store's elapsed counter); nil: time since the Keyring was made.
	Now func() time.Duration
	// Rand supplies keys and the first epoch; nil: crypto/rand.
	Rand io.Reader
	// Log gets keys dropped for a lost cache and damaged key lines.
	Log *slog.Logger
}

// Keyring is a relay's onion keys and their replay caches. It is safe for
// concurrent use.
type Keyring struct {
	o  KeyringOptions
	mu sync.Mutex
	// keys: the current key first, then the retired ones still honoured.
	keys      []*epochKey
	rotations int64
}

type epochKey struct {
	epoch   uint32
	priv    *ecdh.PrivateKey
	id      []byte        // the replay cache's name
	born    time.Duration // when it became current
	retired time.Duration // when it stopped being current; -1 while current
	tags    int           // tags in its cache
}

func keyID(pub *ecdh.PublicKey) []byte {
	h := sha256.New()
	h.Write([]byte("qpq onion key id v1"))
	h.Write(pub.Bytes())
	return h.Sum(nil)
}

// NewKeyring loads the keys in o.File whose replay caches are intact,
// rotates what is due, and makes a new current key when none is left.
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
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		start := time.Now()
		o.Now = func() time.Duration { return time.Since(start) }
	}
	if o.Cache == nil {
		o.Cache, o.File = newMemCache(), ""
	}
	k := &Keyring{o: o}
	k.mu.Lock()
	defer k.mu.Unlock()
	if err := k.loadLocked(); err != nil {
		return nil, err
	}
	if _, err := k.tickLocked(o.Now()); err != nil {
		return nil, err
	}
	// Caches no key names (a crash between making a cache and saving its
	// key, or between dropping a key and its cache) go.
	names, err := o.Cache.ReplayKeys()
	if err != nil {
		return nil, err
	}
	for _, n := range names {
		if k.byID(n) == nil {
			if err := o.Cache.ReplayDrop(n); err != nil {
				return nil, err
			}
		}
	}
	return k, nil
}

func (k *Keyring) byID(id []byte) *epochKey {
	for _, e := range k.keys {
		if bytes.Equal(e.id, id) {
			return e
		}
	}
	return nil
}

// loadLocked reads the key file and keeps the keys whose caches exist.
func (k *Keyring) loadLocked() error {
	if k.o.File == "" {
		return nil
	}
	b, err := os.ReadFile(k.o.File)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read onion keys: %w", err)
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	dropped := false
	for line := 1; sc.Scan(); line++ {
		e, err := parseKeyLine(sc.Text())
		if err != nil {
			k.o.Log.Warn("onion key file: damaged line skipped", "file", k.o.File, "line", line, "err", err)
			dropped = true
			continue
		}
		exists, n, err := k.o.Cache.ReplayCount(e.id)
		if err != nil {
			return err
		}
		if !exists {
			k.o.Log.Info("onion key's replay cache is gone (store wiped, e.g. by a reboot): the key is not honoured again", "epoch", e.epoch)
			dropped = true
			continue
		}
		e.tags = n
		k.keys = append(k.keys, e)
	}
	// The newest first; only the newest may be current.
	for i := 1; i < len(k.keys); i++ {
		for j := i; j > 0 && k.keys[j].born > k.keys[j-1].born; j-- {
			k.keys[j], k.keys[j-1] = k.keys[j-1], k.keys[j]
		}
	}
	// A newest key that is retired (the current one was dropped) gets a
	// new current key in front of it (tickLocked).
	if dropped {
		return k.saveLocked()
	}
	return nil
}

const keyLinePrefix = "qpq-onion-key-v1"

func parseKeyLine(s string) (*epochKey, error) {
	f := strings.Fields(s)
	if len(f) != 5 || f[0] != keyLinePrefix {
		return nil, errors.New("want: " + keyLinePrefix + " EPOCH BORN RETIRED KEY")
	}
	epoch, err := strconv.ParseUint(f[1], 10, 32)
	if err != nil {
		return nil, fmt.Errorf("epoch: %w", err)
	}
	born, err := strconv.ParseInt(f[2], 10, 64)
	if err != nil || born < 0 {
		return nil, fmt.Errorf("born %q", f[2])
	}
	retired, err := strconv.ParseInt(f[3], 10, 64)
	if err != nil || retired < -1 {
		return nil, fmt.Errorf("retired %q", f[3])
	}
	raw, err := base64.RawStdEncoding.DecodeString(f[4])
	if err != nil {
		return nil, fmt.Errorf("key: %w", err)
	}
	priv, err := ecdh.X25519().NewPrivateKey(raw)
	if err != nil {
		return nil, fmt.Errorf("key: %w", err)
	}
	return &epochKey{epoch: uint32(epoch), priv: priv, id: keyID(priv.PublicKey()), born: time.Duration(born), retired: time.Duration(retired)}, nil
}

// saveLocked writes the key file atomically.
func (k *Keyring) saveLocked() error {
	if k.o.File == "" {
		return nil
	}
	var b bytes.Buffer
	for _, e := range k.keys {
		fmt.Fprintf(&b, "%s %d %d %d %s\n", keyLinePrefix, e.epoch, int64(e.born), int64(e.retired), base64.RawStdEncoding.EncodeToString(e.priv.Bytes()))
	}
	tmp, err := os.CreateTemp(filepath.Dir(k.o.File), ".onion-keys-*")
	if err != nil {
		return fmt.Errorf("save onion keys: %w", err)
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return fmt.Errorf("save onion keys: %w", err)
	}
	if _, err := tmp.Write(b.Bytes()); err != nil {
		tmp.Close()
		return fmt.Errorf("save onion keys: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("save onion keys: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("save onion keys: %w", err)
	}
	if err := os.Rename(tmp.Name(), k.o.File); err != nil {
		return fmt.Errorf("save onion keys: %w", err)
	}
	return nil
}

// addLocked makes a new current key at epoch: its cache first, then the
// key file, so a crash between leaves a cache without a key (dropped at
// the next start), never a key without a cache.
func (k *Keyring) addLocked(epoch uint32, now time.Duration) error {
	priv, err := ecdh.X25519().GenerateKey(k.o.Rand)
	if err != nil {
		return fmt.Errorf("onion key: %w", err)
	}
	e := &epochKey{epoch: epoch, priv: priv, id: keyID(priv.PublicKey()), born: now, retired: -1}
	if err := k.o.Cache.ReplayCreate(e.id); err != nil {
		return err
	}
	if len(k.keys) > 0 && k.keys[0].retired < 0 {
		k.keys[0].retired = now
	}
	k.keys = append([]*epochKey{e}, k.keys...)
	return k.saveLocked()
}

// Current returns the epoch and public key to publish.
func (k *Keyring) Current() (uint32, *ecdh.PublicKey) {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.keys[0].epoch, k.keys[0].priv.PublicKey()
}

// Tick rotates the current key when its period is over or its cache is
// full, and drops retired keys past the overlap with their caches. It
// reports whether the current key changed (the descriptor must be
// published again).
func (k *Keyring) Tick() (bool, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.tickLocked(k.o.Now())
}

func (k *Keyring) tickLocked(now time.Duration) (bool, error) {
	rotated := false
	switch {
	case len(k.keys) == 0 || k.keys[0].retired >= 0:
		epoch, err := k.nextEpochLocked()
		if err != nil {
			return false, err
		}
		if err := k.addLocked(epoch, now); err != nil {
			return false, err
		}
		rotated = true
	case now-k.keys[0].born >= k.o.Period || now < k.keys[0].born || k.keys[0].tags >= k.o.MaxTags:
		if err := k.addLocked(k.keys[0].epoch+1, now); err != nil {
			return false, err
		}
		rotated = true
	}
	if rotated {
		k.rotations++
	}
	kept := k.keys[:1]
	var gone []*epochKey
	for _, e := range k.keys[1:] {
		if now-e.retired < k.o.Overlap && now >= e.retired {
			kept = append(kept, e)
		} else {
			gone = append(gone, e)
		}
	}
	if len(gone) == 0 {
		return rotated, nil
	}
	k.keys = append([]*epochKey(nil), kept...)
	if err := k.saveLocked(); err != nil {
		return rotated, err
	}
	for _, e := range gone {
		if err := k.o.Cache.ReplayDrop(e.id); err != nil {
			return rotated, err
		}
	}
	return rotated, nil
}

// nextEpochLocked is one past the newest epoch held, or a random one.
func (k *Keyring) nextEpochLocked() (uint32, error) {
	if len(k.keys) > 0 {
		return k.keys[0].epoch + 1, nil
	}
	var b [4]byte
	if _, err := io.ReadFull(k.o.Rand, b[:]); err != nil {
		return 0, fmt.Errorf("onion epoch: %w", err)
	}
	return binary.BigEndian.Uint32(b[:]), nil
}

// Peel peels pkt with the key its epoch names and records its replay tag
// durably before it returns; a packet under a key not held is refused
// with ErrUnknownEpoch, one seen before with ErrReplay. A key whose cache
// is full refuses every new packet (ErrReplay: it could not tell).
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
	k.mu.Lock()
	full := e.tags >= k.o.MaxTags
	k.mu.Unlock()
	if full {
		return nil, fmt.Errorf("%w: epoch %d's replay cache is full", ErrReplay, epoch)
	}
	fresh, err := k.o.Cache.ReplayAdd(e.id, p.Tag[:16])
	if err != nil {
		return nil, err
	}
	if !fresh {
		return nil, fmt.Errorf("%w (epoch %d)", ErrReplay, epoch)
	}
	k.mu.Lock()
	e.tags++
	k.mu.Unlock()
	return p, nil
}

// KeyringStats is what a Keyring holds.
type KeyringStats struct {
	Epoch     uint32 // the current key's
	Keys      int    // keys honoured: the current one and retired ones in their overlap
	Tags      int    // replay tags held, all keys
	Rotations int64  // since start (the first key of a start counts)
}

// Stats returns the counts now.
func (k *Keyring) Stats() KeyringStats {
	k.mu.Lock()
	defer k.mu.Unlock()
	s := KeyringStats{Epoch: k.keys[0].epoch, Keys: len(k.keys), Rotations: k.rotations}
	for _, e := range k.keys {
		s.Tags += e.tags
	}
	return s
}

// memCache is a ReplayCache in memory.
type memCache struct {
	mu sync.Mutex
	m  map[string]map[string]bool
}

func newMemCache() *memCache { return &memCache{m: map[string]map[string]bool{}} }

func (c *memCache) ReplayCreate(key []byte) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m[string(key)] == nil {
		c.m[string(key)] = map[string]bool{}
	}
	return nil
}

func (c *memCache) ReplayCount(key []byte) (bool, int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	t, ok := c.m[string(key)]
	return ok, len(t), nil
}

func (c *memCache) ReplayAdd(key, tag []byte) (bool, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	t, ok := c.m[string(key)]
	if !ok {
		return false, errors.New("no replay cache for this key")
	}
	if t[string(tag)] {
		return false, nil
	}
	t[string(tag)] = true
	return true, nil
}

func (c *memCache) ReplayKeys() ([][]byte, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out [][]byte
	for k := range c.m {
		out = append(out, []byte(k))
	}
	return out, nil
}

func (c *memCache) ReplayDrop(key []byte) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.m, string(key))
	return nil
}
