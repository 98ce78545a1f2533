// Package home is a user's client state on disk (DESIGN "Names and
// defaults": --home, $QPQ_HOME, ~/.config/qpq): the identity key file,
// contacts, the nodes trusted on first use, the ids of messages already
// shown, and the key bundle's sequence number.
package home

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/quicproquo/qpq/mesh/identity"
)

// File names inside the home dir.
const (
	KeyFile      = "user.key"
	ContactsFile = "contacts.json"
	NodesFile    = "known_nodes"
	SeenFile     = "seen"
	BundleFile   = "bundle.json"
)

// Limits on what is read back, so a damaged file cannot exhaust memory.
const (
	maxStateFile = 4 << 20
	maxSeen      = 20000 // ids remembered; older ones are forgotten first
	maxContacts  = 10000
)

// Home is one user's client directory.
type Home struct{ Dir string }

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

// Contact is a person the user added or verified.
type Contact struct {
	Name        string               `json:"name"`
	Fingerprint identity.Fingerprint `json:"fingerprint"`
}

// Contacts returns the contacts, sorted by name (never nil).
func (h Home) Contacts() ([]Contact, error) {
	b, err := h.read(ContactsFile)
	if errors.Is(err, os.ErrNotExist) {
		return []Contact{}, nil
	}
	if err != nil {
		return nil, err
	}
	var cs []Contact
	if err := json.Unmarshal(b, &cs); err != nil {
		return nil, fmt.Errorf("%s: %w", h.Path(ContactsFile), err)
	}
	if cs == nil {
		cs = []Contact{}
	}
	sort.Slice(cs, func(i, j int) bool { return cs[i].Name < cs[j].Name })
	return cs, nil
}

// ErrContactName is returned for a name that cannot be used.
var ErrContactName = errors.New("bad contact name")

// AddContact adds or renames a contact. Names are 1-64 printable
// characters without spaces and must be unique.
func (h Home) AddContact(c Contact) error {
	if c.Name == "" || len(c.Name) > 64 || strings.ContainsAny(c.Name, " \t\r\n#") || !printable(c.Name) {
		return fmt.Errorf("%w %q: want 1-64 printable characters, no spaces or '#'", ErrContactName, c.Name)
	}
	if len(c.Name) == identity.FingerprintLen {
		if _, err := identity.ParseFingerprint(c.Name); err == nil {
			return fmt.Errorf("%w %q: a name cannot look like a fingerprint", ErrContactName, c.Name)
		}
	}
	cs, err := h.Contacts()
	if err != nil {
		return err
	}
	out := cs[:0]
	for _, o := range cs {
		if o.Fingerprint == c.Fingerprint {
			continue
		}
		if o.Name == c.Name {
			return fmt.Errorf("%w %q: already names %s", ErrContactName, c.Name, o.Fingerprint)
		}
		out = append(out, o)
	}
	out = append(out, c)
	if len(out) > maxContacts {
		return fmt.Errorf("more than %d contacts", maxContacts)
	}
	b, _ := json.MarshalIndent(out, "", "  ")
	return h.write(ContactsFile, append(b, '\n'))
}

func printable(s string) bool {
	for _, r := range s {
		if r < 0x20 || r == 0x7f {
			return false
		}
	}
	return true
}

// ErrUnknownRecipient and ErrAmbiguous are returned by ResolveRecipient.
var (
	ErrUnknownRecipient = errors.New("unknown recipient")
	ErrAmbiguous        = errors.New("ambiguous recipient")
)

// ResolveRecipient turns what a user typed into a fingerprint: a contact
// name, a full fingerprint, or a unique prefix of a contact's fingerprint.
// Prefixes are matched only among contacts: anyone can grind a key whose
// fingerprint starts like someone else's.
func (h Home) ResolveRecipient(who string) (identity.Fingerprint, string, error) {
	cs, err := h.Contacts()
	if err != nil {
		return identity.Fingerprint{}, "", err
	}
	for _, c := range cs {
		if c.Name == who {
			return c.Fingerprint, c.Name, nil
		}
	}
	if fp, err := identity.ParseFingerprint(who); err == nil {
		return fp, h.NameOf(fp), nil
	}
	w := strings.ToLower(strings.ReplaceAll(who, "-", ""))
	var match []Contact
	if len(w) >= 4 {
		for _, c := range cs {
			if strings.HasPrefix(c.Fingerprint.String(), w) {
				match = append(match, c)
			}
		}
	}
	switch len(match) {
	case 1:
		return match[0].Fingerprint, match[0].Name, nil
	case 0:
		return identity.Fingerprint{}, "", fmt.Errorf("%w %q: not a contact name, a full fingerprint, or a prefix (4+ characters) of a contact's fingerprint", ErrUnknownRecipient, who)
	}
	names := make([]string, len(match))
	for i, c := range match {
		names[i] = c.Name
	}
	return identity.Fingerprint{}, "", fmt.Errorf("%w %q: matches %s", ErrAmbiguous, who, strings.Join(names, ", "))
}

// NameOf returns the contact name for fp, or "".
func (h Home) NameOf(fp identity.Fingerprint) string {
	cs, _ := h.Contacts()
	for _, c := range cs {
		if c.Fingerprint == fp {
			return c.Name
		}
	}
	return ""
}

// ErrNodeChanged is returned when a node address answers with a key other
// than the one remembered for it.
var ErrNodeChanged = errors.New("node key changed")

// KnownNode returns the fingerprint remembered for a node address.
func (h Home) KnownNode(addr string) (identity.Fingerprint, bool) {
	b, err := h.read(NodesFile)
	if err != nil {
		return identity.Fingerprint{}, false
	}
	sc := bufio.NewScanner(strings.NewReader(string(b)))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 2 && f[0] == addr {
			if fp, err := identity.ParseFingerprint(f[1]); err == nil {
				return fp, true
			}
		}
	}
	return identity.Fingerprint{}, false
}

// RememberNode records (or replaces) the fingerprint for a node address.
func (h Home) RememberNode(addr string, fp identity.Fingerprint) error {
	b, err := h.read(NodesFile)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	var out strings.Builder
	sc := bufio.NewScanner(strings.NewReader(string(b)))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 2 && f[0] == addr {
			continue
		}
		out.WriteString(sc.Text() + "\n")
	}
	fmt.Fprintf(&out, "%s %s\n", addr, fp)
	return h.write(NodesFile, []byte(out.String()))
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
