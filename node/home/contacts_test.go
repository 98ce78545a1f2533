package home

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/quicproquo/qpq/mesh/identity"
)

func fpOf(b byte) identity.Fingerprint {
	var f identity.Fingerprint
	for i := range f {
		f[i] = b
	}
	return f
}

func testHome(t *testing.T) Home {
	t.Helper()
	now := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	return Home{Dir: t.TempDir(), Now: func() time.Time { return now }}
}

func TestAddContactNewIdentityIsPendingNeverReplaced(t *testing.T) {
	h := testHome(t)
	old, new := fpOf(1), fpOf(2)
	if err := h.AddContact(Contact{Name: "bob", Fingerprint: old}); err != nil {
		t.Fatal(err)
	}
	if _, err := h.SetVerified("bob", true); err != nil {
		t.Fatal(err)
	}
	// The same name and fingerprint again: a no-op.
	if err := h.AddContact(Contact{Name: "bob", Fingerprint: old}); err != nil {
		t.Fatalf("same contact again: %v", err)
	}
	err := h.AddContact(Contact{Name: "bob", Fingerprint: new})
	var ic *IdentityChangedError
	if !errors.As(err, &ic) || !errors.Is(err, ErrIdentityChanged) || ic.Old != old || ic.New != new || ic.Name != "bob" {
		t.Fatalf("add bob with another fingerprint: %v, want *IdentityChangedError old->new", err)
	}
	c, err := h.Contact("bob")
	if err != nil || c.Fingerprint != old || !c.Verified || c.Changed == nil || c.Changed.Fingerprint != new {
		t.Fatalf("bob after the change: %+v %v; want the old fingerprint kept, verified, the new one pending", c, err)
	}
	// Nothing is sent to bob meanwhile, by name or by his old fingerprint.
	for _, who := range []string{"bob", old.String(), old.String()[:6]} {
		if _, _, err := h.ResolveRecipient(who); !errors.Is(err, ErrIdentityChanged) {
			t.Fatalf("resolve %q with a pending change: %v, want ErrIdentityChanged", who, err)
		}
	}
	if h.NameOf(new) != "" {
		t.Fatalf("the pending fingerprint is named %q; it is not the contact yet", h.NameOf(new))
	}
	if _, err := h.SetVerified("bob", true); !errors.Is(err, ErrIdentityChanged) {
		t.Fatalf("verify with a pending change: %v", err)
	}
	c, err = h.AcceptChange("bob")
	if err != nil || c.Fingerprint != new || c.Changed != nil || c.Verified {
		t.Fatalf("accept: %+v %v; want the new fingerprint, unverified", c, err)
	}
	if fp, name, err := h.ResolveRecipient("bob"); err != nil || fp != new || name != "bob" {
		t.Fatalf("resolve after accept: %v %q %v", fp, name, err)
	}
	if _, err := h.AcceptChange("bob"); !errors.Is(err, ErrNoChange) {
		t.Fatalf("accept again: %v", err)
	}
}

func TestRejectChangeKeepsTheOldIdentity(t *testing.T) {
	h := testHome(t)
	h.AddContact(Contact{Name: "bob", Fingerprint: fpOf(1)})
	h.AddContact(Contact{Name: "bob", Fingerprint: fpOf(2)})
	c, err := h.RejectChange("bob")
	if err != nil || c.Fingerprint != fpOf(1) || c.Changed != nil {
		t.Fatalf("reject: %+v %v", c, err)
	}
	if fp, _, err := h.ResolveRecipient("bob"); err != nil || fp != fpOf(1) {
		t.Fatalf("resolve after reject: %v %v", fp, err)
	}
}

func TestAddKnownFingerprintUnderAnotherNameIsRefused(t *testing.T) {
	h := testHome(t)
	h.AddContact(Contact{Name: "bob", Fingerprint: fpOf(1)})
	h.AddContact(Contact{Name: "carol", Fingerprint: fpOf(3)})
	var ke *KnownError
	if err := h.AddContact(Contact{Name: "robert", Fingerprint: fpOf(1)}); !errors.As(err, &ke) || ke.Name != "bob" {
		t.Fatalf("add bob's fingerprint as robert: %v", err)
	}
	// carol's fingerprint offered for bob: not a change to record.
	if err := h.AddContact(Contact{Name: "bob", Fingerprint: fpOf(3)}); !errors.As(err, &ke) || ke.Name != "carol" {
		t.Fatalf("add carol's fingerprint as bob: %v", err)
	}
	if c, _ := h.Contact("bob"); c.Changed != nil {
		t.Fatalf("bob has a pending change %+v", c.Changed)
	}
}

func TestRenameRemoveBlock(t *testing.T) {
	h := testHome(t)
	h.AddContact(Contact{Name: "bob", Fingerprint: fpOf(1)})
	h.AddContact(Contact{Name: "carol", Fingerprint: fpOf(3)})
	if _, err := h.Rename("bob", "carol"); !errors.Is(err, ErrContactName) {
		t.Fatalf("rename onto a taken name: %v", err)
	}
	if _, err := h.Rename("bob", "bad name"); !errors.Is(err, ErrContactName) {
		t.Fatalf("rename to a name with a space: %v", err)
	}
	if _, err := h.Rename("nobody", "x"); !errors.Is(err, ErrNoContact) {
		t.Fatalf("rename a missing contact: %v", err)
	}
	if _, err := h.SetBlocked("bob", true); err != nil {
		t.Fatal(err)
	}
	c, err := h.Rename("bob", "robert")
	if err != nil || c.Name != "robert" || c.Fingerprint != fpOf(1) || !c.Blocked {
		t.Fatalf("rename: %+v %v", c, err)
	}
	if !h.IsBlocked(fpOf(1)) || h.IsBlocked(fpOf(3)) || h.IsBlocked(fpOf(9)) {
		t.Fatal("IsBlocked: want only robert blocked")
	}
	h.SetBlocked("robert", false)
	if h.IsBlocked(fpOf(1)) {
		t.Fatal("unblocked robert is still blocked")
	}
	if _, err := h.Remove("robert"); err != nil {
		t.Fatal(err)
	}
	if _, err := h.Remove("robert"); !errors.Is(err, ErrNoContact) {
		t.Fatalf("remove twice: %v", err)
	}
	cs, _ := h.Contacts()
	if len(cs) != 1 || cs[0].Name != "carol" {
		t.Fatalf("left: %+v", cs)
	}
}

func TestContactsFileVersion1IsReadAndVersion2Written(t *testing.T) {
	h := testHome(t)
	v1 := `[
  {"name": "zed", "fingerprint": "` + fpOf(5).String() + `"},
  {"name": "amy", "fingerprint": "` + fpOf(6).String() + `"}
]
`
	if err := os.WriteFile(h.Path(ContactsFile), []byte(v1), 0o600); err != nil {
		t.Fatal(err)
	}
	cs, err := h.Contacts()
	if err != nil || len(cs) != 2 || cs[0].Name != "amy" || cs[1].Fingerprint != fpOf(5) {
		t.Fatalf("version 1 read: %+v %v", cs, err)
	}
	if _, err := h.SetBlocked("zed", true); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(h.Path(ContactsFile))
	if !strings.Contains(string(b), `"version": 2`) || !strings.Contains(string(b), `"blocked": true`) {
		t.Fatalf("written file:\n%s", b)
	}
	cs, err = h.Contacts()
	if err != nil || len(cs) != 2 || !cs[1].Blocked {
		t.Fatalf("version 2 read back: %+v %v", cs, err)
	}
}

func TestDamagedContactsFileIsAnErrorNamingIt(t *testing.T) {
	good := `{"version": 2, "contacts": [{"name": "amy", "fingerprint": "` + fpOf(6).String() + `"}]}`
	for name, content := range map[string]string{
		"truncated":       good[:len(good)-10],
		"empty":           "",
		"bad fingerprint": `[{"name": "amy", "fingerprint": "zzz"}]`,
		"no fingerprint":  `[{"name": "amy"}]`,
		"bad name":        `[{"name": "a b", "fingerprint": "` + fpOf(6).String() + `"}]`,
		"duplicate name":  `[{"name": "a", "fingerprint": "` + fpOf(6).String() + `"}, {"name": "a", "fingerprint": "` + fpOf(7).String() + `"}]`,
		"future version":  `{"version": 3, "contacts": []}`,
	} {
		t.Run(name, func(t *testing.T) {
			h := testHome(t)
			os.WriteFile(h.Path(ContactsFile), []byte(content), 0o600)
			if _, err := h.Contacts(); err == nil || !strings.Contains(err.Error(), h.Path(ContactsFile)) {
				t.Fatalf("Contacts: %v, want an error naming the file", err)
			}
			// And nothing overwrites it: the contacts stay for the user to recover.
			if err := h.AddContact(Contact{Name: "new", Fingerprint: fpOf(9)}); err == nil {
				t.Fatal("AddContact over a damaged file succeeded")
			}
			if b, _ := os.ReadFile(h.Path(ContactsFile)); string(b) != content {
				t.Fatalf("damaged file rewritten: %q", b)
			}
		})
	}
}

func TestContactsFileIsBounded(t *testing.T) {
	h := testHome(t)
	big := make([]byte, maxStateFile+2)
	for i := range big {
		big[i] = ' '
	}
	big[0] = '['
	os.WriteFile(h.Path(ContactsFile), big, 0o600)
	if _, err := h.Contacts(); err == nil || !strings.Contains(err.Error(), h.Path(ContactsFile)) {
		t.Fatalf("oversized file: %v", err)
	}
}

func TestConcurrentChangesAreNotLost(t *testing.T) {
	h := testHome(t)
	const n = 20
	errs := make(chan error, n)
	for i := range n {
		go func() {
			errs <- h.AddContact(Contact{Name: fmt.Sprintf("c%d", i), Fingerprint: fpOf(byte(i + 1))})
		}()
	}
	for range n {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if cs, err := h.Contacts(); err != nil || len(cs) != n {
		t.Fatalf("%d contacts after %d concurrent adds (%v)", len(cs), n, err)
	}
}

func TestConfirmVerifiedAcceptsAPendingChange(t *testing.T) {
	h := testHome(t)
	h.AddContact(Contact{Name: "bob", Fingerprint: fpOf(1)})
	if c, _ := h.Contact("bob"); c.Verifying() != fpOf(1) {
		t.Fatalf("Verifying without a change: %v", c.Verifying())
	}
	h.AddContact(Contact{Name: "bob", Fingerprint: fpOf(2)})
	if c, _ := h.Contact("bob"); c.Verifying() != fpOf(2) {
		t.Fatalf("Verifying with a change: %v", c.Verifying())
	}
	c, accepted, err := h.ConfirmVerified("bob")
	if err != nil || !accepted || c.Fingerprint != fpOf(2) || !c.Verified || c.Changed != nil {
		t.Fatalf("ConfirmVerified: %+v %v %v", c, accepted, err)
	}
	if _, accepted, err := h.ConfirmVerified("bob"); err != nil || accepted {
		t.Fatalf("ConfirmVerified again: %v %v", accepted, err)
	}
}

// FuzzDecodeContacts: any file content is contacts or an error, never a
// panic, and what decodes is written back and read the same.
func FuzzDecodeContacts(f *testing.F) {
	f.Add([]byte(`[{"name": "amy", "fingerprint": "` + fpOf(6).String() + `"}]`))
	f.Add([]byte(`{"version": 2, "contacts": [{"name": "a", "fingerprint": "` + fpOf(6).String() + `", "changed": {"fingerprint": "` + fpOf(7).String() + `", "seen": "2026-12-01T10:00:00Z"}}]}`))
	f.Add([]byte(`{"version": 2}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		cs, err := decodeContacts(b)
		if err != nil {
			return
		}
		h := Home{Dir: t.TempDir()}
		if err := h.saveContacts(cs); err != nil {
			t.Fatal(err)
		}
		back, err := h.Contacts()
		if err != nil || len(back) != len(cs) {
			t.Fatalf("decoded %d contacts, read back %d: %v", len(cs), len(back), err)
		}
	})
}
