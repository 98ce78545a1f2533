package main

import (
	"errors"
	"fmt"
	"os"

	"github.com/quicproquo/qpq/mesh/identity"
	"github.com/quicproquo/qpq/node/e2e"
	"github.com/quicproquo/qpq/node/home"
)

const idAbout = `Create or show your user identity: an Ed25519 key (who you are) and an
X-Wing post-quantum KEM key (what messages to you are sealed to), kept in
the home dir (--home, else $QPQ_HOME, else ~/.config/qpq).

qpq id new encrypts the key file with a passphrase: from QPQ_PASSPHRASE, or
asked for on the terminal. With QPQ_PASSPHRASE set but empty, or with no
terminal, the file is stored unencrypted (mode 0600) and a warning says so.

qpq id show prints your fingerprint and short code; read the short code
aloud to a contact so they can check the fingerprint they added. --qr shows
a QR code a phone camera reads (qpq:user/FINGERPRINT).

Examples:
  qpq id new --home ./alice
  qpq id show --home ./alice --json`

func runID(env *cliEnv, args []string) int {
	fs := newFlags(env, "id", "id new|show [--home DIR] [--json] [--qr]", idAbout)
	if len(args) == 0 || (args[0] != "new" && args[0] != "show") {
		if code, ok := parseStatus(env, fs, fs.Parse(args)); !ok {
			return code
		}
		fmt.Fprintln(env.stderr, "qpq id: want `qpq id new` or `qpq id show`")
		usageHint(env, fs)
		return exitUsage
	}
	sub := args[0]
	homeDir := fs.String("home", "", "client home dir [$QPQ_HOME]")
	asJSON := fs.Bool("json", false, "print one JSON object with keys fingerprint and short")
	showQR := fs.Bool("qr", false, "also print a QR code (id show)")
	if code, ok := parseStatus(env, fs, fs.Parse(args[1:])); !ok {
		return code
	}
	h, err := home.Resolve(*homeDir, env.getenv)
	if err != nil {
		fmt.Fprintf(env.stderr, "qpq id: %v\n", err)
		return exitUsage
	}
	path := h.Path(home.KeyFile)
	var fp identity.Fingerprint
	switch sub {
	case "new":
		if _, err := os.Stat(path); err == nil {
			fmt.Fprintf(env.stderr, "qpq id new: %s already holds an identity; refusing to replace it\n", path)
			return exitFailure
		}
		pass, err := newPassphrase(env)
		if err != nil {
			fmt.Fprintf(env.stderr, "qpq id new: %v\n", err)
			return exitFailure
		}
		if err := h.Ensure(); err != nil {
			fmt.Fprintf(env.stderr, "qpq id new: %v\n", err)
			return exitFailure
		}
		u := e2e.NewUser()
		if err := e2e.SaveUser(path, u, pass); err != nil {
			fmt.Fprintf(env.stderr, "qpq id new: %v\n", err)
			return exitFailure
		}
		fp = u.Fingerprint()
		fmt.Fprintf(env.stderr, "created a new identity in %s\n", path)
	case "show":
		fp, err = e2e.ReadFingerprint(path)
		if errors.Is(err, os.ErrNotExist) {
			fmt.Fprintf(env.stderr, "qpq id show: %v\n", noIdentity(h))
			return exitFailure
		}
		if err != nil {
			fmt.Fprintf(env.stderr, "qpq id show: %v\n", err)
			return exitFailure
		}
	}
	if *asJSON {
		if code := writeJSON(env, "id", idJSON{Fingerprint: fp.String(), Short: fp.Short()}); code != exitOK {
			return code
		}
	} else {
		fmt.Fprintf(env.stdout, "fingerprint  %s\nshort code   %s\n", fp, fp.Short())
	}
	if *showQR {
		if err := printQR(env.stdout, "qpq:user/"+fp.String()); err != nil {
			fmt.Fprintf(env.stderr, "qpq id: %v\n", err)
			return exitFailure
		}
	}
	return exitOK
}

// newPassphrase decides the new key file's passphrase.
func newPassphrase(env *cliEnv) ([]byte, error) {
	if v, ok := env.lookupEnv("QPQ_PASSPHRASE"); ok {
		if v == "" {
			fmt.Fprintln(env.stderr, "warning: QPQ_PASSPHRASE is empty: the key file is stored unencrypted (mode 0600)")
		}
		return []byte(v), nil
	}
	if !stdinIsTerminal() {
		fmt.Fprintln(env.stderr, "warning: no terminal to ask for a passphrase: the key file is stored unencrypted (mode 0600); set QPQ_PASSPHRASE to encrypt it")
		return nil, nil
	}
	p1, err := readPassphrase(env, "new passphrase (empty for none): ")
	if err != nil {
		return nil, err
	}
	if len(p1) == 0 {
		fmt.Fprintln(env.stderr, "warning: no passphrase: the key file is stored unencrypted (mode 0600)")
		return nil, nil
	}
	p2, err := readPassphrase(env, "repeat passphrase: ")
	if err != nil {
		return nil, err
	}
	if string(p1) != string(p2) {
		return nil, errors.New("the passphrases differ; nothing was created")
	}
	return p1, nil
}

// nodeQRPrefix starts the text of a node's QR code (qpq node id --qr):
// the fingerprint a client or a neighbour pins (ADDR#FINGERPRINT).
const nodeQRPrefix = "qpq:node/"

// printNodeQR prints the node fingerprint's QR code when asked to.
func printNodeQR(env *cliEnv, fp identity.Fingerprint, show bool) int {
	if !show {
		return exitOK
	}
	if err := printQR(env.stdout, nodeQRPrefix+fp.String()); err != nil {
		fmt.Fprintf(env.stderr, "qpq node id: %v\n", err)
		return exitFailure
	}
	return exitOK
}
