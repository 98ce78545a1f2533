package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"golang.org/x/term"

	"github.com/quicproquo/qpq/mesh/identity"
	"github.com/quicproquo/qpq/mesh/link"
	"github.com/quicproquo/qpq/node/client"
	"github.com/quicproquo/qpq/node/e2e"
	"github.com/quicproquo/qpq/node/home"
)

// bundleLifetime is what a published bundle claims (DESIGN: 30 days).
const bundleLifetime = 30 * 24 * time.Hour

// connectTimeout bounds dialling a node and the first calls.
const connectTimeout = 15 * time.Second

// stdinIsTerminal reports whether a passphrase can be prompted for.
func stdinIsTerminal() bool { return term.IsTerminal(int(os.Stdin.Fd())) }

// readPassphrase prompts on the terminal without echo.
func readPassphrase(env *cliEnv, prompt string) ([]byte, error) {
	fmt.Fprint(env.stderr, prompt)
	p, err := term.ReadPassword(int(os.Stdin.Fd()))
	fmt.Fprintln(env.stderr)
	return p, err
}

// loadUser opens the user's key file, asking for a passphrase only when
// the file is encrypted: QPQ_PASSPHRASE, else a prompt on a terminal, else
// a clear error (commands never hang waiting for input).
func loadUser(env *cliEnv, h home.Home) (*e2e.User, error) {
	path := h.Path(home.KeyFile)
	enc, err := e2e.IsEncrypted(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, noIdentity(h)
	}
	if err != nil {
		return nil, err
	}
	var pass []byte
	if enc {
		if v, ok := env.lookupEnv("QPQ_PASSPHRASE"); ok {
			pass = []byte(v)
		} else if stdinIsTerminal() {
			if pass, err = readPassphrase(env, "passphrase for "+path+": "); err != nil {
				return nil, err
			}
		} else {
			return nil, fmt.Errorf("%s is encrypted: set QPQ_PASSPHRASE or run in a terminal", path)
		}
	}
	u, err := e2e.LoadUser(path, pass)
	if err != nil {
		return nil, fmt.Errorf("load identity: %w", err)
	}
	return u, nil
}

// requireIdentity checks that h holds a user identity before a command
// looks anything else up, so that a wrong --home is named as such rather
// than showing up as an unknown contact or channel.
func requireIdentity(h home.Home) error {
	if _, err := os.Stat(h.Path(home.KeyFile)); errors.Is(err, os.ErrNotExist) {
		return noIdentity(h)
	}
	return nil
}

func noIdentity(h home.Home) error {
	return fmt.Errorf("no identity in %s (no %s): check --home or QPQ_HOME, or create one with `qpq id new --home %s`", h.Dir, home.KeyFile, h.Dir)
}

// nodeTarget is --node ADDR[#FP] parsed.
type nodeTarget struct {
	addr string
	pin  identity.Fingerprint
}

// parseNode parses --node (or $QPQ_NODE); a missing one is a usage error.
func parseNode(flagValue string, env *cliEnv) (nodeTarget, error) {
	v := flagValue
	src := "--node"
	if v == "" {
		v, src = env.getenv("QPQ_NODE"), "QPQ_NODE"
	}
	if v == "" {
		return nodeTarget{}, errors.New("no node: give --node ADDR[#FINGERPRINT] or set QPQ_NODE")
	}
	addr, fp, hasFP := strings.Cut(v, "#")
	if err := link.CheckHostPort(addr); err != nil {
		return nodeTarget{}, fmt.Errorf("%s %q: %v", src, v, err)
	}
	t := nodeTarget{addr: addr}
	if hasFP {
		p, err := identity.ParseFingerprint(fp)
		if err != nil {
			return nodeTarget{}, fmt.Errorf("%s %q: %v", src, v, err)
		}
		t.pin = p
	}
	return t, nil
}

// connect dials the node: pinned by --node ADDR#FP, else by the
// fingerprint remembered for ADDR, else trusting on first use and
// remembering it. A changed key is refused unless repin.
func connect(ctx context.Context, env *cliEnv, h home.Home, t nodeTarget, repin bool) (*client.Client, error) {
	pin := t.pin
	known, isKnown := h.KnownNode(t.addr)
	if pin.IsZero() && isKnown && !repin {
		pin = known
	}
	c, err := client.DialNotify(ctx, t.addr, pin, time.Second, func() { fmt.Fprintf(env.stderr, "connecting to node %s...\n", t.addr) })
	if err != nil {
		if errors.Is(err, link.ErrFingerprintMismatch) && t.pin.IsZero() {
			return nil, fmt.Errorf("%w: node %s no longer proves the key remembered in %s (%v); if the operator confirms a new key, run again with --repin",
				home.ErrNodeChanged, t.addr, h.Path(home.NodesFile), err)
		}
		return nil, fmt.Errorf("connect to node %s: %w", t.addr, err)
	}
	if !isKnown || known != c.NodeFingerprint() {
		if !isKnown && t.pin.IsZero() {
			fmt.Fprintf(env.stderr, "trusting node %s on first use: %s (remembered in %s)\n", t.addr, c.NodeFingerprint().Short(), h.Path(home.NodesFile))
		}
		if err := h.RememberNode(t.addr, c.NodeFingerprint()); err != nil {
			c.Close()
			return nil, err
		}
	}
	return c, nil
}

// signedBundle returns the user's bundle to publish now.
func signedBundle(h home.Home, u *e2e.User) ([]byte, error) {
	seq, err := h.BundleSeq(time.Now())
	if err != nil {
		return nil, err
	}
	return u.SignedBundle(seq, bundleLifetime)
}
