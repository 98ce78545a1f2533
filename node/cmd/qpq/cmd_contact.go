package main

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/quicproquo/qpq/mesh/identity"
	"github.com/quicproquo/qpq/node/display"
	"github.com/quicproquo/qpq/node/e2e"
	"github.com/quicproquo/qpq/node/home"
	"github.com/quicproquo/qpq/node/safety"
)

const contactAbout = `Keep the people you write to: a contact is a name bound to an identity
fingerprint. qpq send --to then takes the name, the full fingerprint, or a
unique prefix of a contact's fingerprint.

  qpq contact add FP|SHARE [NAME]   add a fingerprint (or the qpq:user/FP text of
                                    their QR code) under NAME
  qpq contact list [--json]         the contacts, verified, blocked, changed
  qpq contact verify NAME [ok]      show the safety number you and NAME compare
                                    (and its QR code); ok marks NAME verified
  qpq contact accept NAME           take NAME's changed identity
  qpq contact reject NAME           keep NAME's identity, forget the change
  qpq contact rename OLD NEW        rename a contact
  qpq contact remove NAME           forget a contact
  qpq contact block NAME|FP         hide messages from NAME (still acknowledged,
                                    so the mesh deletes them); unblock NAME

Safety numbers: 60 digits made from both your fingerprints, the same on
both sides. Read them to each other (or scan the QR code) in person or on
a call you trust; when they match, each of you holds the other's real
identity, and qpq contact verify NAME ok records that.

A key bundle (the key messages are sealed to) is signed by its identity, so
bundles rotate without a word. A name whose identity itself changes (the
person made a new identity, or someone else claims the name) is never
taken silently: contact add warns with both safety numbers and exits 1,
and nothing is sent to that contact until you run qpq contact accept NAME
(or verify NAME ok after comparing the new number) or qpq contact reject NAME.

Examples:
  qpq contact add 4xq7...full-52-characters... bob
  qpq contact verify bob
  qpq contact list --json`

// contactListJSON is one line of `qpq contact list --json`.
type contactListJSON struct {
	contactJSON
	Verified      bool   `json:"verified"`
	Blocked       bool   `json:"blocked"`
	Changed       string `json:"changed,omitempty"`      // the pending new fingerprint
	ChangedSeen   string `json:"changed_seen,omitempty"` // RFC 3339, UTC
	SafetyNumber  string `json:"safety_number,omitempty"`
	ChangedSafety string `json:"changed_safety_number,omitempty"`
}

// contactVerifyJSON is what `qpq contact verify NAME --json` prints.
type contactVerifyJSON struct {
	Name         string `json:"name"`
	Fingerprint  string `json:"fingerprint"`
	You          string `json:"you"`
	SafetyNumber string `json:"safety_number"`
	QR           string `json:"qr"`
	Verified     bool   `json:"verified"`
}

var contactSubs = []string{"add", "list", "verify", "accept", "reject", "rename", "remove", "block", "unblock"}

// contactArgs is how many positional arguments each subcommand takes.
var contactArgs = map[string]struct {
	min, max int
	names    string
}{
	"add": {1, 2, "FINGERPRINT [NAME]"}, "list": {0, 0, "no arguments"}, "verify": {1, 2, "NAME [ok]"},
	"accept": {1, 1, "NAME"}, "reject": {1, 1, "NAME"}, "rename": {2, 2, "OLD NEW"}, "remove": {1, 1, "NAME"},
	"block": {1, 1, "NAME or FINGERPRINT"}, "unblock": {1, 1, "NAME"},
}

func runContact(env *cliEnv, args []string) int {
	fs := newFlags(env, "contact", "contact add FP|SHARE [NAME] | list [--json] | verify NAME [ok] | accept NAME | reject NAME\n       | rename OLD NEW | remove NAME | block NAME|FP | unblock NAME   [--home DIR]", contactAbout)
	homeDir := fs.String("home", "", "client home dir [$QPQ_HOME]")
	asJSON := fs.Bool("json", false, "list, verify: print JSON (list: one object per contact)")
	showQR := fs.Bool("qr", true, "verify: also print the safety number as a QR code")
	if len(args) == 0 || contactArgs[args[0]].names == "" {
		if code, ok := parseStatus(env, fs, fs.Parse(args)); !ok {
			return code
		}
		fmt.Fprintf(env.stderr, "qpq contact: want one of: %s\n", strings.Join(contactSubs, ", "))
		usageHint(env, fs)
		return exitUsage
	}
	sub := args[0]
	pos, err := parseInterleaved(fs, args[1:])
	if err != nil {
		code, _ := parseStatus(env, fs, err)
		return code
	}
	h, err := home.Resolve(*homeDir, env.getenv)
	if err != nil {
		fmt.Fprintf(env.stderr, "qpq contact: %v\n", err)
		return exitUsage
	}
	if u := contactArgs[sub]; len(pos) < u.min || len(pos) > u.max || (sub == "verify" && len(pos) == 2 && pos[1] != "ok") {
		fmt.Fprintf(env.stderr, "qpq contact %s: want %s\n", sub, u.names)
		return exitUsage
	}
	c := contactCmd{env: env, h: h, name: "qpq contact " + sub}
	switch sub {
	case "add":
		return c.add(pos)
	case "list":
		return c.list(*asJSON)
	case "verify":
		return c.verify(pos[0], len(pos) == 2, *asJSON, *showQR)
	case "accept":
		return c.accept(pos[0])
	case "reject":
		ct, err := h.RejectChange(pos[0])
		if err != nil {
			return c.fail(err)
		}
		fmt.Fprintf(env.stdout, "kept %s as %s; the changed identity was forgotten\n", display.Escape(ct.Name), ct.Fingerprint)
	case "rename":
		ct, err := h.Rename(pos[0], pos[1])
		if err != nil {
			return c.fail(err)
		}
		fmt.Fprintf(env.stdout, "renamed %s to %s  %s\n", display.Escape(pos[0]), display.Escape(ct.Name), ct.Fingerprint)
	case "remove":
		ct, err := h.Remove(pos[0])
		if err != nil {
			return c.fail(err)
		}
		fmt.Fprintf(env.stdout, "removed %s  %s\n", display.Escape(ct.Name), ct.Fingerprint)
	case "block":
		return c.block(pos[0])
	case "unblock":
		ct, err := h.SetBlocked(pos[0], false)
		if err != nil {
			return c.fail(err)
		}
		fmt.Fprintf(env.stdout, "unblocked %s: their messages are shown again\n", display.Escape(ct.Name))
	}
	return exitOK
}

// contactCmd is one run of a contact subcommand.
type contactCmd struct {
	env  *cliEnv
	h    home.Home
	name string // "qpq contact add", for messages
}

func (c contactCmd) fail(err error) int {
	fmt.Fprintf(c.env.stderr, "%s: %s\n", c.name, display.Escape(err.Error()))
	return exitFailure
}

// parseUserShare reads a fingerprint, or the qpq:user/FP text that
// `qpq id show --qr` puts in its QR code (anything after the fingerprint,
// such as later address hints after '?', is ignored).
func parseUserShare(s string) (identity.Fingerprint, error) {
	if rest, ok := strings.CutPrefix(s, "qpq:user/"); ok {
		if i := strings.IndexAny(rest, "?#/"); i >= 0 {
			rest = rest[:i]
		}
		s = rest
	}
	return identity.ParseFingerprint(s)
}

func (c contactCmd) add(pos []string) int {
	fp, err := parseUserShare(pos[0])
	if err != nil {
		fmt.Fprintf(c.env.stderr, "%s: %q: %v (a full 52-character fingerprint, or qpq:user/FINGERPRINT from a QR code)\n", c.name, pos[0], err)
		return exitUsage
	}
	name := ""
	if len(pos) == 2 {
		name = pos[1]
	}
	if name == "" {
		if ct, ok, err := c.h.ContactByFingerprint(fp); err != nil {
			return c.fail(err)
		} else if ok {
			fmt.Fprintf(c.env.stdout, "%s is already the contact %s\n", fp, display.Escape(ct.Name))
			return exitOK
		}
		name = fp.String()[:8]
	}
	err = c.h.AddContact(home.Contact{Name: name, Fingerprint: fp})
	var ic *home.IdentityChangedError
	if errors.As(err, &ic) {
		fmt.Fprint(c.env.stderr, identityChangeWarning(c.h, ic))
		return exitFailure
	}
	if err != nil {
		return c.fail(err)
	}
	fmt.Fprintf(c.env.stdout, "added %s  %s  (short %s)\n", display.Escape(name), fp, fp.Short())
	return exitOK
}

// ownFingerprint is the user's fingerprint, read without the passphrase.
func ownFingerprint(h home.Home) (identity.Fingerprint, error) {
	fp, err := e2e.ReadFingerprint(h.Path(home.KeyFile))
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return identity.Fingerprint{}, noIdentity(h)
		}
		return identity.Fingerprint{}, err
	}
	return fp, nil
}

// identityChangeWarning explains a changed identity with both safety
// numbers (the one verified before, the one the new identity would have)
// and what to do. (Shared with qpq chat.)
func identityChangeWarning(h home.Home, ic *home.IdentityChangedError) string {
	var b strings.Builder
	name := display.Escape(ic.Name)
	fmt.Fprintf(&b, "WARNING: the identity of contact %s changed. Nothing was replaced, and nothing is sent to %s until you decide.\n", name, name)
	me, err := ownFingerprint(h)
	fmt.Fprintf(&b, "  kept:     %s  (the identity %s has had)\n", ic.Old, name)
	if err == nil {
		fmt.Fprintf(&b, "            safety number %s\n", safety.Number(me, ic.Old))
	}
	fmt.Fprintf(&b, "  offered:  %s  (first seen %s)\n", ic.New, ic.Seen.UTC().Format(time.RFC3339))
	if err == nil {
		fmt.Fprintf(&b, "            safety number %s\n", safety.Number(me, ic.New))
	} else {
		fmt.Fprintf(&b, "  (no safety numbers: %v)\n", err)
	}
	fmt.Fprintf(&b, "If %s made a new identity, compare the new safety number with them (in person or on a call: qpq contact verify %s), then accept it: qpq contact accept %s\n", name, name, name)
	fmt.Fprintf(&b, "If not, someone else may be claiming the name: keep the old identity with qpq contact reject %s\n", name)
	return b.String()
}

func (c contactCmd) list(asJSON bool) int {
	cs, err := c.h.Contacts()
	if err != nil {
		return c.fail(err)
	}
	me, meErr := ownFingerprint(c.h)
	for _, ct := range cs {
		if asJSON {
			j := contactListJSON{contactJSON: contactJSON{Name: ct.Name, Fingerprint: ct.Fingerprint.String()}, Verified: ct.Verified, Blocked: ct.Blocked}
			if meErr == nil {
				j.SafetyNumber = safety.Number(me, ct.Fingerprint)
			}
			if ct.Changed != nil {
				j.Changed, j.ChangedSeen = ct.Changed.Fingerprint.String(), ct.Changed.Seen.UTC().Format(time.RFC3339)
				if meErr == nil {
					j.ChangedSafety = safety.Number(me, ct.Changed.Fingerprint)
				}
			}
			if code := writeJSON(c.env, "contact list", j); code != exitOK {
				return code
			}
			continue
		}
		var marks []string
		if ct.Verified {
			marks = append(marks, "verified")
		}
		if ct.Blocked {
			marks = append(marks, "blocked")
		}
		if ct.Changed != nil {
			marks = append(marks, fmt.Sprintf("IDENTITY CHANGED to %s (qpq contact verify %s)", ct.Changed.Fingerprint, display.Escape(ct.Name)))
		}
		fmt.Fprintf(c.env.stdout, "%-16s %s  %s  %s\n", display.Escape(ct.Name), ct.Fingerprint, ct.Fingerprint.Short(), strings.Join(marks, ", "))
	}
	return exitOK
}

// verify shows the safety number with the contact (for a pending change,
// with the new identity: that is the one to confirm); ok records it.
func (c contactCmd) verify(name string, ok, asJSON, showQR bool) int {
	ct, err := c.h.Contact(name)
	if err != nil {
		return c.fail(err)
	}
	me, err := ownFingerprint(c.h)
	if err != nil {
		return c.fail(err)
	}
	n := display.Escape(ct.Name)
	fp := ct.Verifying()
	if ct.Changed != nil && !ok {
		fmt.Fprintf(c.env.stderr, "the identity of %s changed from %s to %s (first seen %s); below is the safety number with the NEW identity. If it matches theirs, run qpq contact verify %s ok (accepts the change and marks it verified)\n",
			n, ct.Fingerprint, fp, ct.Changed.Seen.UTC().Format(time.RFC3339), n)
	}
	if ok {
		var accepted bool
		if ct, accepted, err = c.h.ConfirmVerified(name); err != nil {
			return c.fail(err)
		}
		if accepted {
			fmt.Fprintf(c.env.stderr, "accepted the new identity of %s\n", n)
		}
	}
	if asJSON {
		return writeJSON(c.env, "contact verify", contactVerifyJSON{Name: ct.Name, Fingerprint: fp.String(), You: me.String(), SafetyNumber: safety.Number(me, fp), QR: safety.QR(me, fp), Verified: ct.Verified && ct.Fingerprint == fp})
	}
	fmt.Fprintf(c.env.stdout, "safety number with %s (%s; you are %s):\n", n, fp, me)
	for _, l := range safety.Lines(me, fp) {
		fmt.Fprintf(c.env.stdout, "    %s\n", l)
	}
	if showQR {
		if err := printQR(c.env.stdout, safety.QR(me, fp)); err != nil {
			return c.fail(err)
		}
	}
	switch {
	case ok:
		fmt.Fprintf(c.env.stdout, "%s is verified\n", n)
	case ct.Verified && ct.Changed == nil:
		fmt.Fprintf(c.env.stdout, "%s is verified (compared earlier)\n", n)
	default:
		fmt.Fprintf(c.env.stdout, "%s is not verified: compare these digits with what qpq contact verify shows on %s's side; if they match, run qpq contact verify %s ok\n", n, n, n)
	}
	return exitOK
}

func (c contactCmd) accept(name string) int {
	ct, err := c.h.AcceptChange(name)
	if err != nil {
		return c.fail(err)
	}
	n := display.Escape(ct.Name)
	fmt.Fprintf(c.env.stdout, "%s is now %s  (short %s); not verified yet: compare the safety number with qpq contact verify %s\n", n, ct.Fingerprint, ct.Fingerprint.Short(), n)
	return exitOK
}

// block blocks a contact, or a fingerprint that is none yet (stored as a
// blocked contact under its first 8 characters).
func (c contactCmd) block(who string) int {
	if fp, err := identity.ParseFingerprint(who); err == nil {
		ct, ok, err := c.h.ContactByFingerprint(fp)
		if err != nil {
			return c.fail(err)
		}
		if !ok {
			name := fp.String()[:8]
			if err := c.h.AddContact(home.Contact{Name: name, Fingerprint: fp, Blocked: true}); err != nil {
				return c.fail(err)
			}
			fmt.Fprintf(c.env.stdout, "blocked %s (kept as the contact %s): their messages are acknowledged unseen\n", fp, name)
			return exitOK
		}
		who = ct.Name
	}
	ct, err := c.h.SetBlocked(who, true)
	if err != nil {
		return c.fail(err)
	}
	fmt.Fprintf(c.env.stdout, "blocked %s: their messages are acknowledged unseen (they see them as delivered)\n", display.Escape(ct.Name))
	return exitOK
}
