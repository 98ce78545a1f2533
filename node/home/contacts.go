package home

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/quicproquo/qpq/mesh/identity"
)

// ContactsFile holds the contacts. Format (add fields only, never change
// one): {"version": 2, "contacts": [Contact...]}. Version 1, written until
// issue 11, is a bare JSON array of {"name", "fingerprint"}; it is still
// read, and the next change writes version 2.
const ContactsFile = "contacts.json"

// contactsLock serialises changes to ContactsFile between processes.
const contactsLock = ".contacts.lock"

const (
	contactsVersion = 2
	maxContacts     = 10000
	maxContactName  = 64
)

// Contact is a name bound to an identity fingerprint: a person the user
// added (from a fingerprint, a share or a QR code) or verified.
//
// Only the identity fingerprint is kept. A contact's key bundle (its KEM
// key) may rotate at will: every bundle is signed by the identity key and
// checked against this fingerprint (e2e.VerifyBundle, client.LookupBundle),
// so rotation needs nothing here and is accepted silently. What changes the
// fingerprint is a new identity, and that is never taken silently: see
// Changed.
type Contact struct {
	Name        string               `json:"name"`
	Fingerprint identity.Fingerprint `json:"fingerprint"`
	// Verified: the user compared the safety number with this person (qpq
	// contact verify NAME ok, /verify NAME ok). Cleared when a changed
	// identity is accepted.
	Verified bool `json:"verified,omitempty"`
	// Blocked: messages from this fingerprint are not shown (still
	// acknowledged, so the mesh deletes them).
	Blocked bool `json:"blocked,omitempty"`
	// Changed is another fingerprint seen under this name (a contact add or
	// share for the name with another identity), waiting for the user to
	// accept it (AcceptChange) or reject it (RejectChange). Until then
	// nothing is sent to the contact.
	Changed *Change `json:"changed,omitempty"`
}

// Change is a pending new identity for a contact.
type Change struct {
	Fingerprint identity.Fingerprint `json:"fingerprint"`
	Seen        time.Time            `json:"seen"` // when it was first seen
}

// Errors of the contact functions; compare with errors.Is.
var (
	// ErrContactName: a name that cannot be used, or is taken.
	ErrContactName = errors.New("bad contact name")
	// ErrNoContact: no contact has that name (or fingerprint).
	ErrNoContact = errors.New("no such contact")
	// ErrIdentityChanged: a name was given another identity fingerprint
	// (returned as *IdentityChangedError), or a contact has such a change
	// pending (from ResolveRecipient: nothing may be sent to it).
	ErrIdentityChanged = errors.New("contact identity changed")
	// ErrNoChange: AcceptChange or RejectChange on a contact without a
	// pending change.
	ErrNoChange = errors.New("no identity change pending")
	// ErrKnownFingerprint: the fingerprint is already a contact under
	// another name (returned as *KnownError).
	ErrKnownFingerprint = errors.New("fingerprint is already a contact")
)

// IdentityChangedError says that Name is bound to Old and New was seen
// for it. It matches ErrIdentityChanged.
type IdentityChangedError struct {
	Name     string
	Old, New identity.Fingerprint
	Seen     time.Time // when New was first seen
}

func (e *IdentityChangedError) Error() string {
	return fmt.Sprintf("the identity of contact %q changed: it is %s, and %s was offered for it (first seen %s); nothing was replaced and nothing is sent to %s until you check the new safety number (qpq contact verify %s) and accept it (qpq contact accept %s), or keep the old one (qpq contact reject %s)",
		e.Name, e.Old, e.New, e.Seen.UTC().Format(time.RFC3339), e.Name, e.Name, e.Name, e.Name)
}

// Is makes errors.Is(err, ErrIdentityChanged) true.
func (e *IdentityChangedError) Is(target error) bool { return target == ErrIdentityChanged }

// KnownError says that a fingerprint is already the contact Name.
// It matches ErrKnownFingerprint.
type KnownError struct {
	Name        string
	Fingerprint identity.Fingerprint
}

func (e *KnownError) Error() string {
	return fmt.Sprintf("%s is already the contact %q (rename it with qpq contact rename %s NEW)", e.Fingerprint, e.Name, e.Name)
}

// Is makes errors.Is(err, ErrKnownFingerprint) true.
func (e *KnownError) Is(target error) bool { return target == ErrKnownFingerprint }

// contactsFile is the version-2 file.
type contactsFile struct {
	Version  int       `json:"version"`
	Contacts []Contact `json:"contacts"`
}

// Contacts returns the contacts, sorted by name (never nil). A file that
// cannot be read completely is an error naming it: contacts are never
// dropped silently.
func (h Home) Contacts() ([]Contact, error) {
	b, err := h.read(ContactsFile)
	if errors.Is(err, os.ErrNotExist) {
		return []Contact{}, nil
	}
	if err != nil {
		return nil, err
	}
	cs, err := decodeContacts(b)
	if err != nil {
		return nil, fmt.Errorf("contacts file %s is damaged (fix or move it away; nothing was changed): %w", h.Path(ContactsFile), err)
	}
	return cs, nil
}

func decodeContacts(b []byte) ([]Contact, error) {
	t := bytes.TrimSpace(b)
	var cs []Contact
	switch {
	case len(t) == 0:
		return nil, errors.New("empty")
	case t[0] == '[': // version 1
		if err := json.Unmarshal(t, &cs); err != nil {
			return nil, err
		}
	default:
		var f contactsFile
		if err := json.Unmarshal(t, &f); err != nil {
			return nil, err
		}
		if f.Version != contactsVersion {
			return nil, fmt.Errorf("version %d, this qpq reads 1 and %d", f.Version, contactsVersion)
		}
		cs = f.Contacts
	}
	if len(cs) > maxContacts {
		return nil, fmt.Errorf("%d contacts, more than %d", len(cs), maxContacts)
	}
	names := make(map[string]bool, len(cs))
	fps := make(map[identity.Fingerprint]string, len(cs))
	for i, c := range cs {
		if err := checkName(c.Name); err != nil {
			return nil, fmt.Errorf("contact %d: %w", i+1, err)
		}
		if c.Fingerprint.IsZero() {
			return nil, fmt.Errorf("contact %d (%q): no fingerprint", i+1, c.Name)
		}
		if names[c.Name] {
			return nil, fmt.Errorf("contact %d: the name %q appears twice", i+1, c.Name)
		}
		if o, ok := fps[c.Fingerprint]; ok {
			return nil, fmt.Errorf("contact %d (%q): same fingerprint as %q", i+1, c.Name, o)
		}
		if c.Changed != nil && c.Changed.Fingerprint.IsZero() {
			return nil, fmt.Errorf("contact %d (%q): changed identity without a fingerprint", i+1, c.Name)
		}
		names[c.Name] = true
		fps[c.Fingerprint] = c.Name
	}
	if cs == nil {
		cs = []Contact{}
	}
	sort.Slice(cs, func(i, j int) bool { return cs[i].Name < cs[j].Name })
	return cs, nil
}

// saveContacts writes the version-2 file.
func (h Home) saveContacts(cs []Contact) error {
	if len(cs) > maxContacts {
		return fmt.Errorf("more than %d contacts", maxContacts)
	}
	sort.Slice(cs, func(i, j int) bool { return cs[i].Name < cs[j].Name })
	b, err := json.MarshalIndent(contactsFile{Version: contactsVersion, Contacts: cs}, "", "  ")
	if err != nil {
		return fmt.Errorf("encode contacts: %w", err)
	}
	return h.write(ContactsFile, append(b, '\n'))
}

// checkName validates a contact name: 1-64 printable characters without
// spaces or '#', not shaped like a fingerprint.
func checkName(name string) error {
	if name == "" || len(name) > maxContactName || strings.ContainsAny(name, " \t\r\n#") || !printable(name) {
		return fmt.Errorf("%w %q: want 1-64 printable characters, no spaces or '#'", ErrContactName, name)
	}
	if len(name) == identity.FingerprintLen {
		if _, err := identity.ParseFingerprint(name); err == nil {
			return fmt.Errorf("%w %q: a name cannot look like a fingerprint", ErrContactName, name)
		}
	}
	return nil
}

func printable(s string) bool {
	for _, r := range s {
		if r < 0x20 || r == 0x7f {
			return false
		}
	}
	return true
}

// AddContact stores a new contact (with the Verified and Blocked flags
// given). Names are 1-64 printable characters without spaces and unique;
// fingerprints are unique.
//
//   - The same name and fingerprint again: nothing changes, nil.
//   - The fingerprint under another name: *KnownError (Rename renames).
//   - The name with another fingerprint: the contact is kept as it is,
//     the new fingerprint is recorded as its pending change (the first
//     time it is seen), and *IdentityChangedError is returned.
func (h Home) AddContact(c Contact) error {
	if err := checkName(c.Name); err != nil {
		return err
	}
	if c.Fingerprint.IsZero() {
		return fmt.Errorf("add contact %q: no fingerprint", c.Name)
	}
	return h.locked(contactsLock, func() error { return h.addContactLocked(c) })
}

func (h Home) addContactLocked(c Contact) error {
	cs, err := h.Contacts()
	if err != nil {
		return err
	}
	for i, o := range cs {
		if o.Name == c.Name {
			if o.Fingerprint == c.Fingerprint {
				return nil
			}
			if other, ok := byFingerprint(cs, c.Fingerprint); ok {
				return &KnownError{Name: other.Name, Fingerprint: c.Fingerprint}
			}
			if o.Changed == nil || o.Changed.Fingerprint != c.Fingerprint {
				cs[i].Changed = &Change{Fingerprint: c.Fingerprint, Seen: h.now().UTC()}
				if err := h.saveContacts(cs); err != nil {
					return err
				}
			}
			return &IdentityChangedError{Name: o.Name, Old: o.Fingerprint, New: c.Fingerprint, Seen: cs[i].Changed.Seen}
		}
	}
	if other, ok := byFingerprint(cs, c.Fingerprint); ok {
		return &KnownError{Name: other.Name, Fingerprint: c.Fingerprint}
	}
	c.Changed = nil
	return h.saveContacts(append(cs, c))
}

func byFingerprint(cs []Contact, fp identity.Fingerprint) (Contact, bool) {
	for _, c := range cs {
		if c.Fingerprint == fp {
			return c, true
		}
	}
	return Contact{}, false
}

// Contact returns the contact called name (ErrNoContact if none).
func (h Home) Contact(name string) (Contact, error) {
	cs, err := h.Contacts()
	if err != nil {
		return Contact{}, err
	}
	for _, c := range cs {
		if c.Name == name {
			return c, nil
		}
	}
	return Contact{}, fmt.Errorf("%w %q", ErrNoContact, name)
}

// ContactByFingerprint returns the contact bound to fp. A pending changed
// fingerprint is not a match: that identity is not the contact (yet).
func (h Home) ContactByFingerprint(fp identity.Fingerprint) (Contact, bool, error) {
	cs, err := h.Contacts()
	if err != nil {
		return Contact{}, false, err
	}
	c, ok := byFingerprint(cs, fp)
	return c, ok, nil
}

// IsBlocked reports whether fp is a blocked contact. When the contacts
// file cannot be read it says false: the message is shown rather than
// deleted unseen (the reading command reports the damaged file).
func (h Home) IsBlocked(fp identity.Fingerprint) bool {
	c, ok, err := h.ContactByFingerprint(fp)
	return err == nil && ok && c.Blocked
}

// updateContact applies f to the contact called name and saves.
func (h Home) updateContact(name string, f func(c *Contact, cs []Contact) error) (Contact, error) {
	var c Contact
	err := h.locked(contactsLock, func() error {
		cs, err := h.Contacts()
		if err != nil {
			return err
		}
		for i := range cs {
			if cs[i].Name == name {
				if err := f(&cs[i], cs); err != nil {
					return err
				}
				c = cs[i]
				return h.saveContacts(cs)
			}
		}
		return fmt.Errorf("%w %q", ErrNoContact, name)
	})
	if err != nil {
		return Contact{}, err
	}
	return c, nil
}

// AcceptChange binds name to its pending changed fingerprint and returns
// the contact as it is now. The new identity is not verified yet (Verified
// is cleared); Blocked is kept.
func (h Home) AcceptChange(name string) (Contact, error) {
	return h.updateContact(name, func(c *Contact, cs []Contact) error {
		if c.Changed == nil {
			return fmt.Errorf("contact %q: %w", name, ErrNoChange)
		}
		if other, ok := byFingerprint(cs, c.Changed.Fingerprint); ok {
			return &KnownError{Name: other.Name, Fingerprint: c.Changed.Fingerprint}
		}
		c.Fingerprint, c.Changed, c.Verified = c.Changed.Fingerprint, nil, false
		return nil
	})
}

// RejectChange forgets name's pending changed fingerprint and keeps the
// identity it has. (The same change offered again is recorded again.)
func (h Home) RejectChange(name string) (Contact, error) {
	return h.updateContact(name, func(c *Contact, _ []Contact) error {
		if c.Changed == nil {
			return fmt.Errorf("contact %q: %w", name, ErrNoChange)
		}
		c.Changed = nil
		return nil
	})
}

// SetVerified marks name verified or not. Marking a contact with a pending
// change verified is refused (*IdentityChangedError): the user compared a
// safety number, but which identity it was for is ambiguous; accept the
// change first.
func (h Home) SetVerified(name string, verified bool) (Contact, error) {
	return h.updateContact(name, func(c *Contact, _ []Contact) error {
		if verified && c.Changed != nil {
			return &IdentityChangedError{Name: c.Name, Old: c.Fingerprint, New: c.Changed.Fingerprint, Seen: c.Changed.Seen}
		}
		c.Verified = verified
		return nil
	})
}

// Verifying is the fingerprint whose safety number the user should
// compare for c: the pending changed one if there is one (that is what
// ConfirmVerified would bind), else the contact's.
func (c Contact) Verifying() identity.Fingerprint {
	if c.Changed != nil {
		return c.Changed.Fingerprint
	}
	return c.Fingerprint
}

// ConfirmVerified records that the user compared the safety number of
// name's Verifying fingerprint (qpq contact verify NAME ok, /verify NAME
// ok): a pending change is accepted (accepted is true) and the contact
// marked verified, in one step.
func (h Home) ConfirmVerified(name string) (c Contact, accepted bool, err error) {
	c, err = h.updateContact(name, func(c *Contact, cs []Contact) error {
		if c.Changed != nil {
			if other, ok := byFingerprint(cs, c.Changed.Fingerprint); ok {
				return &KnownError{Name: other.Name, Fingerprint: c.Changed.Fingerprint}
			}
			c.Fingerprint, c.Changed, accepted = c.Changed.Fingerprint, nil, true
		}
		c.Verified = true
		return nil
	})
	return c, accepted && err == nil, err
}

// SetBlocked blocks or unblocks name.
func (h Home) SetBlocked(name string, blocked bool) (Contact, error) {
	return h.updateContact(name, func(c *Contact, _ []Contact) error {
		c.Blocked = blocked
		return nil
	})
}

// Remove deletes the contact called name and returns what it was.
func (h Home) Remove(name string) (Contact, error) {
	var gone Contact
	err := h.locked(contactsLock, func() error {
		cs, err := h.Contacts()
		if err != nil {
			return err
		}
		for i, c := range cs {
			if c.Name == name {
				gone = c
				return h.saveContacts(append(cs[:i], cs[i+1:]...))
			}
		}
		return fmt.Errorf("%w %q", ErrNoContact, name)
	})
	if err != nil {
		return Contact{}, err
	}
	return gone, nil
}

// Rename gives the contact old the name new (validated as AddContact
// does), keeping everything else. A taken new name is refused.
func (h Home) Rename(old, new string) (Contact, error) {
	if err := checkName(new); err != nil {
		return Contact{}, err
	}
	if old == new {
		return h.Contact(old)
	}
	return h.updateContact(old, func(c *Contact, cs []Contact) error {
		for _, o := range cs {
			if o.Name == new {
				return fmt.Errorf("%w %q: already names %s", ErrContactName, new, o.Fingerprint)
			}
		}
		c.Name = new
		return nil
	})
}

// ErrUnknownRecipient and ErrAmbiguous are returned by ResolveRecipient.
var (
	ErrUnknownRecipient = errors.New("unknown recipient")
	ErrAmbiguous        = errors.New("ambiguous recipient")
)

// ResolveRecipient turns what a user typed into a fingerprint to send to:
// a contact name, a full fingerprint, or a unique prefix of a contact's
// fingerprint. Prefixes are matched only among contacts: anyone can grind
// a key whose fingerprint starts like someone else's. A contact with a
// pending identity change is refused with *IdentityChangedError: nothing
// is sent to it until the user accepts (or rejects) the change.
func (h Home) ResolveRecipient(who string) (identity.Fingerprint, string, error) {
	cs, err := h.Contacts()
	if err != nil {
		return identity.Fingerprint{}, "", err
	}
	c, err := resolve(cs, who)
	if err != nil {
		return identity.Fingerprint{}, "", err
	}
	if c.Changed != nil {
		return identity.Fingerprint{}, "", &IdentityChangedError{Name: c.Name, Old: c.Fingerprint, New: c.Changed.Fingerprint, Seen: c.Changed.Seen}
	}
	return c.Fingerprint, c.Name, nil
}

// resolve finds who among cs; a full fingerprint that is no contact
// returns a Contact with only the fingerprint.
func resolve(cs []Contact, who string) (Contact, error) {
	for _, c := range cs {
		if c.Name == who {
			return c, nil
		}
	}
	if fp, err := identity.ParseFingerprint(who); err == nil {
		if c, ok := byFingerprint(cs, fp); ok {
			return c, nil
		}
		return Contact{Fingerprint: fp}, nil
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
		return match[0], nil
	case 0:
		return Contact{}, fmt.Errorf("%w %q: not a contact name, a full fingerprint, or a prefix (4+ characters) of a contact's fingerprint", ErrUnknownRecipient, who)
	}
	names := make([]string, len(match))
	for i, c := range match {
		names[i] = c.Name
	}
	return Contact{}, fmt.Errorf("%w %q: matches %s", ErrAmbiguous, who, strings.Join(names, ", "))
}

// NameOf returns the contact name for fp, or "".
func (h Home) NameOf(fp identity.Fingerprint) string {
	c, ok, _ := h.ContactByFingerprint(fp)
	if !ok {
		return ""
	}
	return c.Name
}
