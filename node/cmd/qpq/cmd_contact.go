package main

import (
	"fmt"

	"github.com/quicproquo/qpq/mesh/identity"
	"github.com/quicproquo/qpq/node/home"
)

const contactAbout = `Keep the people you write to. qpq contact add stores a full fingerprint
under a name (check it first: compare their short code read aloud, or scan
their QR code); qpq send --to then takes the name, the full fingerprint, or
a unique prefix of a contact's fingerprint.

Examples:
  qpq contact add 4xq7...full-52-characters... bob
  qpq contact list --json`

func runContact(env *cliEnv, args []string) int {
	fs := newFlags(env, "contact", "contact add FINGERPRINT [NAME] | contact list [--json]  [--home DIR]", contactAbout)
	homeDir := fs.String("home", "", "client home dir [$QPQ_HOME]")
	asJSON := fs.Bool("json", false, "list as one JSON object per line: name, fingerprint")
	if len(args) == 0 || (args[0] != "add" && args[0] != "list") {
		if code, ok := parseStatus(env, fs, fs.Parse(args)); !ok {
			return code
		}
		fmt.Fprintln(env.stderr, "qpq contact: want `qpq contact add FP [NAME]` or `qpq contact list`")
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
	switch sub {
	case "add":
		if len(pos) < 1 || len(pos) > 2 {
			fmt.Fprintln(env.stderr, "qpq contact add: want FINGERPRINT [NAME]")
			return exitUsage
		}
		fp, err := identity.ParseFingerprint(pos[0])
		if err != nil {
			fmt.Fprintf(env.stderr, "qpq contact add: %q: %v (a full 52-character fingerprint)\n", pos[0], err)
			return exitUsage
		}
		name := ""
		if len(pos) == 2 {
			name = pos[1]
		}
		if name == "" {
			name = fp.String()[:8]
		}
		if err := h.AddContact(home.Contact{Name: name, Fingerprint: fp}); err != nil {
			fmt.Fprintf(env.stderr, "qpq contact add: %v\n", err)
			return exitFailure
		}
		fmt.Fprintf(env.stdout, "added %s  %s  (short %s)\n", name, fp, fp.Short())
	case "list":
		if len(pos) != 0 {
			fmt.Fprintf(env.stderr, "qpq contact list: unexpected argument %q\n", pos[0])
			return exitUsage
		}
		cs, err := h.Contacts()
		if err != nil {
			fmt.Fprintf(env.stderr, "qpq contact list: %v\n", err)
			return exitFailure
		}
		for _, c := range cs {
			if *asJSON {
				if code := writeJSON(env, "contact list", contactJSON{Name: c.Name, Fingerprint: c.Fingerprint.String()}); code != exitOK {
					return code
				}
			} else {
				fmt.Fprintf(env.stdout, "%-16s %s  %s\n", c.Name, c.Fingerprint, c.Fingerprint.Short())
			}
		}
	}
	return exitOK
}
