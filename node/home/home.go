// Package home is a user's client state on disk (DESIGN "Names and
// defaults": --home, $QPQ_HOME, ~/.config/qpq): the identity key file,
// contacts, the nodes trusted on first use, the ids of messages already
// shown, and the key bundle's sequence number.
package home

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/quicproquo/qpq/mesh/identity"
)

// File names inside the home dir.
const (
	KeyFile    = "user.key"
	NodesFile  = "known_nodes"
	SeenFile   = "seen"
	BundleFile = "bundle.json"
)

// Limits on what is read back, so a damaged file cannot exhaust memory.
const (
	maxStateFile = 4 << 20
	maxSeen      = 20000 // ids remembered; older ones are forgotten first
)

// Home is one user's client directory.
type Home struct {
	Dir string
	// Now is the clock for the times recorded in the files (when a
	// contact's changed identity was seen); nil means time.Now.
	Now func() time.Time
}

func (h Home) now() time.Time {
	if h.Now != nil {
		return h.Now()
	}
	return time.Now()
}

// Resolve picks the home dir: flag, then $QPQ_HOME, then ~/.config/qpq.
func Resolve(flagValue string, getenv func(string) string) (Home, error) {
	if flagValue != "" {
		return Home{Dir: flagValue}, nil
	}
	if v := getenv("QPQ_HOME"); v != "" {
		return Home{Dir: v}, nil
	}
	dir, err := os.UserConfigDir()
	if err != nil {
		return Home{}, fmt.Errorf("no home dir: use --home or QPQ_HOME: %w", err)
	}
	return Home{Dir: filepath.Join(dir, "qpq")}, nil
}

// Path returns a file's path in the home dir.
func (h Home) Path(name string) string { return filepath.Join(h.Dir, name) }

// Ensure creates the home dir (0700).
func (h Home) Ensure() error {
	if err := os.MkdirAll(h.Dir, 0o700); err != nil {
		return fmt.Errorf("create home dir %s: %w", h.Dir, err)
	}
	return nil
}

func (h Home) read(name string) ([]byte, error) {
	f, err := os.Open(h.Path(name))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxStateFile+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", h.Path(name), err)
	}
	if len(b) > maxStateFile {
		return nil, fmt.Errorf("%s is larger than %d bytes", h.Path(name), maxStateFile)
	}
	return b, nil
}

// write replaces a file atomically (mode 0600).
func (h Home) write(name string, data []byte) error {
	if err := h.Ensure(); err != nil {
		return err
	}
	path := h.Path(name)
	tmp, err := os.CreateTemp(h.Dir, ".tmp-"+name+"-*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	defer os.Remove(tmp.Name())
	tmp.Chmod(0o600)
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// The contacts are in contacts.go.

// ErrNodeChanged is returned when a node address answers with a key other
// than the one remembered for it.
var ErrNodeChanged = errors.New("node key changed")

// KnownNode returns the fingerprint remembered for a node address.
func (h Home) KnownNode(addr string) (identity.Fingerprint, bool) {
	b, err := h.read(NodesFile)
	if err != nil {
		return identity.Fingerprint{}, false
	}
	// Split, not bufio.Scanner: a damaged over-long line must not hide
	// the lines after it.
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) == 2 && f[0] == addr {
			if fp, err := identity.ParseFingerprint(f[1]); err == nil {
				return fp, true
			}
		}
	}
	return identity.Fingerprint{}, false
}

// MaxNodes bounds the remembered nodes: remembering one more drops the
// least recently remembered, so the file (read on every client start)
// cannot grow without bound as a user walks past many routers.
const MaxNodes = 64

// RememberNode records (or replaces) the fingerprint for a node address,
// as the most recently remembered; beyond MaxNodes the oldest is dropped.
func (h Home) RememberNode(addr string, fp identity.Fingerprint) error {
	b, err := h.read(NodesFile)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	var keep []string
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) == 0 || (len(f) == 2 && f[0] == addr) {
			continue
		}
		keep = append(keep, line)
	}
	keep = append(keep, fmt.Sprintf("%s %s", addr, fp))
	if len(keep) > MaxNodes {
		keep = keep[len(keep)-MaxNodes:]
	}
	return h.write(NodesFile, []byte(strings.Join(keep, "\n")+"\n"))
}

// Seen is the set of message ids already shown to the user.
type Seen struct {
	h     Home
	order []string
	set   map[string]bool
}

// LoadSeen reads the seen set.
func (h Home) LoadSeen() (*Seen, error) {
	s := &Seen{h: h, set: map[string]bool{}}
	b, err := h.read(SeenFile)
	if errors.Is(err, os.ErrNotExist) {
		return s, nil
	}
	if err != nil {
		return nil, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if line = strings.TrimSpace(line); line != "" && !s.set[line] {
			s.set[line] = true
			s.order = append(s.order, line)
		}
	}
	return s, nil
}

// Has reports whether id was shown.
func (s *Seen) Has(id string) bool { return s.set[id] }

// Add records id (call Save to persist).
func (s *Seen) Add(id string) {
	if s.set[id] {
		return
	}
	s.set[id] = true
	s.order = append(s.order, id)
	if len(s.order) > maxSeen {
		drop := s.order[:len(s.order)-maxSeen]
		for _, d := range drop {
			delete(s.set, d)
		}
		s.order = append([]string(nil), s.order[len(drop):]...)
	}
}

// Save writes the seen set.
func (s *Seen) Save() error {
	return s.h.write(SeenFile, []byte(strings.Join(s.order, "\n")+"\n"))
}

// bundleState is the published bundle's sequence number and when it was
// last raised.
type bundleState struct {
	Seq    uint64    `json:"seq"`
	Raised time.Time `json:"raised"`
}

// bundleRefresh is how often the bundle's sequence rises, so that nodes
// far away see a fresh lifetime, while repeated connections in one day
// publish byte-identical bundles (which nodes recognise as duplicates).
const bundleRefresh = 24 * time.Hour

// BundleSeq returns the sequence number to publish now, raising it when
// the last raise is older than a day (or in the future: a wrong clock).
func (h Home) BundleSeq(now time.Time) (uint64, error) {
	var st bundleState
	if b, err := h.read(BundleFile); err == nil {
		json.Unmarshal(b, &st)
	}
	if st.Seq == 0 || now.Sub(st.Raised) > bundleRefresh || now.Before(st.Raised) {
		st.Seq++
		st.Raised = now.UTC()
		b, _ := json.Marshal(st)
		if err := h.write(BundleFile, b); err != nil {
			return 0, err
		}
	}
	return st.Seq, nil
}
