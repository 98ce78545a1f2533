package identity

import (
	"crypto/ecdh"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
)

// Key file names inside a node's data dir.
const (
	NodeKeyFile  = "node.key"  // Ed25519 identity, PKCS#8 PEM
	OnionKeyFile = "onion.key" // X25519 onion key, PKCS#8 PEM; may rotate
)

// maxKeyFile bounds what is read from a key file; a real one is ~120 bytes.
const maxKeyFile = 16 << 10

// ErrKeyFileMode is returned when a key file can be read by group or others.
var ErrKeyFileMode = errors.New("key file is readable by group or others")

// ErrKeyFileAccess is returned when a key file exists but the node may not read it,
// typically keys a root-run node left behind for a service that now runs as its own
// user. The node then refuses to start: a new identity beside the old one would
// silently rename it.
var ErrKeyFileAccess = errors.New("key file exists but cannot be read")

// ErrNoNodeIdentity is returned by LoadNode when the dir holds no node key.
var ErrNoNodeIdentity = errors.New("no node identity")

// Node is a node's identity: the long-term Ed25519 key that names it and
// signs its TLS certificate and descriptor, and the X25519 onion key.
type Node struct {
	Key   ed25519.PrivateKey
	Onion *ecdh.PrivateKey
	fp    Fingerprint
}

// Public returns the Ed25519 public key.
func (n *Node) Public() ed25519.PublicKey { return n.Key.Public().(ed25519.PublicKey) }

// Fingerprint returns the node's fingerprint.
func (n *Node) Fingerprint() Fingerprint { return n.fp }

// NewNode returns a fresh in-memory identity (tests, selftest).
func NewNode() (*Node, error) {
	_, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate identity key: %w", err)
	}
	onion, err := ecdh.X25519().GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate onion key: %w", err)
	}
	return newNode(key, onion), nil
}

func newNode(key ed25519.PrivateKey, onion *ecdh.PrivateKey) *Node {
	return &Node{Key: key, Onion: onion, fp: FingerprintOf(key.Public().(ed25519.PublicKey))}
}

// LoadOrCreateNode reads the node identity from dir, creating the dir (0700)
// and the key files (0600) when they do not exist yet. It refuses key files
// that group or others can read, and key files it may not read
// (ErrKeyFileAccess), naming the file and the fix; it creates a key only where
// none exists.
func LoadOrCreateNode(dir string) (n *Node, created bool, err error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, false, fmt.Errorf("create data dir %s: %w", dir, err)
	}
	keyPath := filepath.Join(dir, NodeKeyFile)
	onionPath := filepath.Join(dir, OnionKeyFile)

	key, err := readKey[ed25519.PrivateKey](keyPath)
	err = accessError(dir, err)
	if errors.Is(err, fs.ErrNotExist) {
		_, key, err = ed25519.GenerateKey(rand.Reader)
		if err != nil {
			return nil, false, fmt.Errorf("generate identity key: %w", err)
		}
		if err := writeKey(keyPath, key); err != nil {
			return nil, false, err
		}
		created = true
	} else if err != nil {
		return nil, false, err
	}

	onion, err := readKey[*ecdh.PrivateKey](onionPath)
	err = accessError(dir, err)
	if errors.Is(err, fs.ErrNotExist) {
		onion, err = ecdh.X25519().GenerateKey(rand.Reader)
		if err != nil {
			return nil, false, fmt.Errorf("generate onion key: %w", err)
		}
		if err := writeKey(onionPath, onion); err != nil {
			return nil, false, err
		}
	} else if err != nil {
		return nil, false, err
	}
	if onion.Curve() != ecdh.X25519() {
		return nil, false, fmt.Errorf("key file %s: not an X25519 key", onionPath)
	}
	return newNode(key, onion), created, nil
}

// LoadNode reads the node identity from dir and never creates one: it
// returns ErrNoNodeIdentity (wrapped with the key file's path) when dir has
// no node key, so a command that only shows who a node is cannot invent a
// node that does not exist.
func LoadNode(dir string) (*Node, error) {
	keyPath := filepath.Join(dir, NodeKeyFile)
	onionPath := filepath.Join(dir, OnionKeyFile)
	key, err := readKey[ed25519.PrivateKey](keyPath)
	err = accessError(dir, err)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w in %s (no %s)", ErrNoNodeIdentity, dir, NodeKeyFile)
	}
	if err != nil {
		return nil, err
	}
	onion, err := readKey[*ecdh.PrivateKey](onionPath)
	if err = accessError(dir, err); err != nil {
		return nil, err
	}
	if onion.Curve() != ecdh.X25519() {
		return nil, fmt.Errorf("key file %s: not an X25519 key", onionPath)
	}
	return newNode(key, onion), nil
}

// accessError turns a permission error from reading a key file in dir into
// ErrKeyFileAccess with the fix; any other error (nil, not-exist) passes as it is,
// so a permission error is never taken for a missing key.
func accessError(dir string, err error) error {
	if !errors.Is(err, fs.ErrPermission) {
		return err
	}
	var pe *fs.PathError
	if errors.As(err, &pe) {
		err = fmt.Errorf("%s: %w", pe.Path, pe.Err) // readKey's wrapping names the path twice
	}
	return fmt.Errorf("%w: %w (running as uid %d); not creating a new identity beside it: "+
		"give %s to the user the node runs as (the OpenWrt package: chown -R qpq:qpq %s)",
		ErrKeyFileAccess, err, os.Geteuid(), dir, dir)
}

// CheckKeyFileMode returns ErrKeyFileMode (wrapped with the path and the
// fix) when path is readable or writable by group or others.
func CheckKeyFileMode(path string) error {
	st, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("key file %s: %w", path, err)
	}
	if perm := st.Mode().Perm(); perm&0o077 != 0 {
		return fmt.Errorf("%w: %s has mode %04o; run: chmod 600 %s", ErrKeyFileMode, path, perm, path)
	}
	return nil
}

func readKey[K any](path string) (K, error) {
	var zero K
	f, err := os.Open(path)
	if err != nil {
		return zero, fmt.Errorf("open key file %s: %w", path, err)
	}
	defer f.Close()
	if err := CheckKeyFileMode(path); err != nil {
		return zero, err
	}
	data, err := io.ReadAll(io.LimitReader(f, maxKeyFile+1))
	if err != nil {
		return zero, fmt.Errorf("read key file %s: %w", path, err)
	}
	if len(data) > maxKeyFile {
		return zero, fmt.Errorf("key file %s: larger than %d bytes, not a key", path, maxKeyFile)
	}
	block, _ := pem.Decode(data)
	if block == nil || block.Type != "PRIVATE KEY" {
		return zero, fmt.Errorf("key file %s: no PEM \"PRIVATE KEY\" block", path)
	}
	parsed, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return zero, fmt.Errorf("key file %s: %w", path, err)
	}
	k, ok := parsed.(K)
	if !ok {
		return zero, fmt.Errorf("key file %s: holds a %T, want a %T", path, parsed, zero)
	}
	return k, nil
}

// writeKey writes a key atomically with mode 0600: a crash leaves either no
// file or a whole one, never a truncated identity.
func writeKey(path string, key any) error {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return fmt.Errorf("encode key %s: %w", path, err)
	}
	data := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
	tmp, err := os.CreateTemp(filepath.Dir(path), ".tmp-"+filepath.Base(path)+"-*")
	if err != nil {
		return fmt.Errorf("write key %s: %w", path, err)
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return fmt.Errorf("write key %s: %w", path, err)
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("write key %s: %w", path, err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("write key %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write key %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("write key %s: %w", path, err)
	}
	return nil
}
